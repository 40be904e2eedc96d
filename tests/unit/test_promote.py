"""The promote task against a real registry (a SQLite store): the champion is scored again on
this run's test images and paired with the challenger's kept predictions; a marginally better
challenger keeps the old champion, a clearly better one replaces it, and the parent's tags
say why.

The models are tiny Keras lookups whose prediction of each test image is chosen (each image
lights one pixel; a Dense layer maps that pixel to the class wanted), so the paired table,
and so the answer, are known.
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from prefect.logging import disable_run_logger

from fmnist.conf import TrackingConfig
from fmnist.stages.evaluate import digest_of_test_set, predictions_csv
from fmnist.stages.load import Dataset
from fmnist.tasks import keys
from fmnist.tasks.promote import promote
from fmnist.tracking import Tracker, open_tracker

N = 400  # test images, each lighting its own pixel


def lookup_model(classes: np.ndarray):
    """A Keras model that predicts classes[i] for test image i."""
    import keras

    weights = np.zeros((28 * 28, 10), np.float32)
    weights[np.arange(len(classes)), classes] = 10.0
    model = keras.Sequential(
        [keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10, "softmax")]
    )
    model.layers[-1].set_weights([weights, np.zeros(10, np.float32)])
    return model


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    rng = np.random.default_rng(0)
    x = np.zeros((N, 28 * 28), np.float32)
    x[np.arange(N), np.arange(N)] = 1.0
    y = rng.integers(0, 10, N).astype(np.int32)
    x = x.reshape(N, 28, 28, 1)
    return Dataset(x[:10], y[:10], x, y, digest="d" * 64)


def answers(dataset: Dataset, right: np.ndarray) -> np.ndarray:
    """Each image's predicted class: its label where `right`, another class elsewhere."""
    return np.where(right, dataset.y_test, (dataset.y_test + 1) % 10)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Tracker:
    root = tmp_path_factory.mktemp("promote")
    import os

    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        yield open_tracker(f"sqlite:///{root}/mlflow.db", "promote", str(root / "artifacts"))
    finally:
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved


@pytest.fixture(scope="module")
def champion_uri(store, dataset) -> str:
    """The champion's logged model: right on the first 300 images, wrong on the rest."""
    right = np.arange(N) < 300
    with store.run("old-champion", tags={keys.TEST_SET_DIGEST: "0" * 64}) as run_id:
        uri = store.log.keras_model(
            run_id, lookup_model(answers(dataset, right)), dataset.x_test[:2]
        )
    return uri


def registered_champion(store: Tracker, uri: str, digest: str | None) -> tuple[str, str]:
    """A registered model of its own with the champion alias on `uri`; (name, version)."""
    name = f"m-{uuid.uuid4().hex[:8]}"
    version = store.registry.register(uri, name)
    store.registry.set_alias(name, "champion", version)
    # What the champion's own run was tested on (all these versions share that one run).
    run_id = store.registry.model_version(f"models:/{name}/{version}").run_id
    if digest is None:
        store.client.delete_tag(run_id, keys.TEST_SET_DIGEST)
    else:
        store.log.tags(run_id, {keys.TEST_SET_DIGEST: digest})
    return name, version


def challenger_run(store: Tracker, dataset: Dataset, right: np.ndarray, keep: bool = True):
    """A parent run with one finished child (vgg) scored on the test set, its predictions
    kept (or not), its model logged; (parent id, {model: child run})."""
    parent = store.start_run("pipeline-unit")
    predicted = answers(dataset, right)
    with store.run("vgg", parent_run_id=parent, tags={keys.MODEL: "vgg"}) as child:
        store.log.metrics(child, {keys.LOSS: 0.5, keys.VAL_LOSS: 0.6})
        store.log.metrics(child, {keys.TEST_ACCURACY: float(right.mean()), keys.TEST_LOSS: 0.4})
        if keep:
            store.log.text(child, predictions_csv(dataset.y_test, predicted), keys.PREDICTIONS)
            digest = digest_of_test_set(dataset.x_test, dataset.y_test)
            store.log.tags(child, {keys.TEST_SET_DIGEST: digest})
        store.log.keras_model(child, lookup_model(predicted), dataset.x_test[:2])
    return parent, store.child_runs(parent)


def settings(name: str | None, rule: str = "paired") -> TrackingConfig:
    return TrackingConfig(
        registered_model=name, promotion_floor=0.5, promotion_rule=rule, significance_level=0.05
    )


def run_promote(store, parent, runs, dataset, cfg):
    with disable_run_logger():
        promoted = promote.fn(store, parent, runs, dataset, cfg, failures={}, provenance={})
    return promoted, store.get_run(parent).data.tags


def champion_version(store: Tracker, name: str) -> str:
    return str(store.registry.alias_version(name, "champion").version)


def test_a_marginally_better_challenger_keeps_the_old_champion(store, dataset, champion_uri):
    digest = digest_of_test_set(dataset.x_test, dataset.y_test)
    name, old = registered_champion(store, champion_uri, digest)
    # Right on the champion's 300 but 2 (the first two), and on 4 more: 302 against 300.
    right = np.arange(N) < 304
    right[:2] = False
    parent, runs = challenger_run(store, dataset, right)
    promoted, tags = run_promote(store, parent, runs, dataset, settings(name))
    assert promoted.usable and promoted.decision.register
    assert champion_version(store, name) == old  # the champion stays
    assert tags["champion.alias"] == "challenger" and tags["promotion.outcome"] == "challenger"
    assert tags["promotion.rule"] == "paired" and tags["promotion.level"] == "0.05"
    assert tags["promotion.difference"] == "+0.0050"
    assert tags["promotion.discordant"] == "challenger only 4, champion only 2"
    assert float(tags["promotion.p_value"]) == pytest.approx(0.6875)  # 2 * P(X <= 2 | 6)
    assert tags["promotion.why"].startswith("better, but not significantly at level 0.05")
    assert tags["promotion.test_set"] == (
        f"champion scored on this run's 400 test images (digest {digest[:12]}); its own run "
        "was tested on the same images"
    )
    challenger = store.registry.alias_version(name, "challenger")
    assert str(challenger.version) == tags["champion.registered_version"] != old
    metrics = store.get_run(parent).data.metrics
    assert metrics["champion.current_test_accuracy"] == pytest.approx(0.75)
    assert metrics["champion.candidate_test_accuracy"] == pytest.approx(0.755)


def test_the_old_rule_moves_the_champion_for_the_same_challenger(store, dataset, champion_uri):
    name, old = registered_champion(store, champion_uri, None)
    right = np.arange(N) < 304
    right[:2] = False
    parent, runs = challenger_run(store, dataset, right)
    _, tags = run_promote(store, parent, runs, dataset, settings(name, "any_improvement"))
    assert tags["champion.alias"] == "champion" != old
    assert champion_version(store, name) == tags["champion.registered_version"]
    assert tags["promotion.test_set"].endswith("its own run recorded no test-set digest")


def test_a_clearly_better_challenger_replaces_it_even_scored_from_its_model(
    store, dataset, champion_uri
):
    name, old = registered_champion(store, champion_uri, "f" * 64)
    right = np.arange(N) < 360  # 60 images more, none fewer
    parent, runs = challenger_run(store, dataset, right, keep=False)  # no predictions kept
    _, tags = run_promote(store, parent, runs, dataset, settings(name))
    assert tags["champion.alias"] == "champion" and tags["champion.previous_version"] == old
    assert champion_version(store, name) == tags["champion.registered_version"]
    assert tags["promotion.discordant"] == "challenger only 60, champion only 0"
    assert float(tags["promotion.p_value"]) < 1e-15
    assert tags["promotion.why"].startswith("significantly better (paired): +0.1500")
    assert (
        "its own run was tested on other images (digest ffffffffffff)"
        in (tags["promotion.test_set"])
    )


def test_without_a_registry_the_run_is_judged_and_nothing_registered(store, dataset):
    parent, runs = challenger_run(store, dataset, np.arange(N) < 360)
    promoted, tags = run_promote(store, parent, runs, dataset, settings(None))
    assert promoted.usable and not promoted.decision.register
    assert tags["promotion.decision"] == "none" and tags["promotion.model"] == "vgg"
    assert tags["promotion.reason"].startswith("tracking.registered_model is null: best")
    assert "champion.alias" not in tags


def test_a_run_below_the_floor_is_not_usable(store, dataset):
    parent, runs = challenger_run(store, dataset, np.arange(N) < 100)  # 0.25 < 0.5
    promoted, tags = run_promote(store, parent, runs, dataset, settings("never-made"))
    assert not promoted.usable and not promoted.decision.register
    assert "below the floor 0.5000" in tags["promotion.reason"]
    assert store.registry.alias_version("never-made", "champion") is None
