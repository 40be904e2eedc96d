"""The promote-champion task applied to real runs of a local store (`.fn`, no Prefect API):
the champion rule as the task applies it (the current champion scored again on this run's
test set; only a better challenger takes its place), and idempotent when a run is promoted
again after a kill between registering and aliasing."""

from __future__ import annotations

import numpy as np
import pytest
from prefect.logging import disable_run_logger

from fmnist.conf import TrackingConfig
from fmnist.stages.evaluate import digest_of_test_set, predictions_csv
from fmnist.stages.load import Dataset
from fmnist.tasks import keys
from fmnist.tasks.promote import promote
from fmnist.tracking import Tracker, open_tracker

REGISTRY = "reg"


@pytest.fixture
def tracker(fresh_store, tmp_path, monkeypatch) -> Tracker:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    return open_tracker(fresh_store, "unit", str(tmp_path / "artifacts"))


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    rng = np.random.default_rng(0)
    x = rng.random((20, 28, 28, 1)).astype(np.float32)
    return Dataset(x, np.arange(20) % 10, x, np.arange(20) % 10, "d" * 64)


def constant_model(label: int):
    """A model that answers `label` for every image: on the dataset below (every class
    twice) it scores 0.1, whatever it logged."""
    import keras

    bias = np.zeros(10, np.float32)
    bias[label] = 5.0
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(
                10,
                "softmax",
                kernel_initializer="zeros",
                bias_initializer=keras.initializers.Constant(bias),
            ),
        ]
    )


def pipeline_run(
    tracker: Tracker, dataset: Dataset, accuracy: float, model=None
) -> tuple[str, dict]:
    """A parent run with one finished model run (a logged Keras model; `accuracy` is the
    test accuracy its run logged, and its kept predictions' share of right answers)."""
    import keras

    if model is None:
        model = keras.Sequential(
            [keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10, "softmax")]
        )
    with tracker.run("pipeline") as parent:
        tags = {keys.MODEL: "vgg"}
        with tracker.run("vgg", parent_run_id=parent, tags=tags) as child:
            tracker.log.metrics(child, {keys.TEST_ACCURACY: accuracy, keys.TEST_LOSS: 1.0})
            # Its answers on this test set, kept as a pipeline run keeps them: right on the
            # first `accuracy` share of the images, so that share is what it is judged by.
            y = dataset.y_test
            right = np.arange(len(y)) < round(accuracy * len(y))
            predicted = np.where(right, y, (y + 1) % 10)
            tracker.log.text(child, predictions_csv(y, predicted), keys.PREDICTIONS)
            digest = digest_of_test_set(dataset.x_test, y)
            tracker.log.tags(child, {keys.TEST_SET_DIGEST: digest})
            tracker.log.keras_model(child, model, dataset.x_test[:2])
    return parent, tracker.child_runs(parent)


def promote_now(
    tracker: Tracker, parent: str, runs: dict, dataset: Dataset, rule: str = "paired"
) -> dict:
    settings = TrackingConfig(registered_model=REGISTRY, promotion_floor=0.0, promotion_rule=rule)
    with disable_run_logger():
        return dict(promote.fn(tracker, parent, runs, dataset, settings).tags)


def versions(tracker: Tracker) -> list[str]:
    found = tracker.client.search_model_versions(f"name = '{REGISTRY}'")
    return sorted(str(v.version) for v in found)


def test_a_promotion_done_again_registers_nothing_twice(tracker, dataset):
    parent, runs = pipeline_run(tracker, dataset, 0.9)
    first = promote_now(tracker, parent, runs, dataset)
    assert first["champion.alias"] == "champion" and versions(tracker) == ["1"]
    # Killed just after the alias, then resumed: the champion's own model is not put up
    # against itself, and not registered again.
    again = promote_now(tracker, parent, runs, dataset)
    assert versions(tracker) == ["1"]
    assert again["champion.registered_version"] == "1"
    assert again["champion.previous_version"] == "unchanged"
    assert tracker.registry.alias_version(REGISTRY, "challenger") is None


def test_a_version_registered_before_a_kill_is_reused_for_the_alias(tracker, dataset):
    parent, runs = pipeline_run(tracker, dataset, 0.9)
    promote_now(tracker, parent, runs, dataset)  # version 1, champion
    parent2, runs2 = pipeline_run(tracker, dataset, 0.95)
    uri = runs2["vgg"].data.tags["model_uri"]
    tracker.registry.register(uri, REGISTRY)  # registered, then killed before the alias
    decision = promote_now(tracker, parent2, runs2, dataset)
    assert versions(tracker) == ["1", "2"]  # no third version
    assert decision["champion.registered_version"] == "2"


def aliases(tracker: Tracker) -> dict[str, str]:
    """Alias -> version of the registered model."""
    found = {a: tracker.registry.alias_version(REGISTRY, a) for a in ("champion", "challenger")}
    return {a: str(v.version) for a, v in found.items() if v is not None}


def test_only_a_challenger_better_than_the_champion_on_this_test_set_takes_its_place(
    tracker, dataset
):
    # The champion's run logged 0.9 on some other test set; scored again on this run's test
    # images it gets 0.1 (it always answers class 0), and 0.1 is what it is judged by.
    # The any_improvement rule: on 20 images no difference here passes the paired test
    # (tests/unit/test_promote.py holds the paired rule's cases).
    parent, runs = pipeline_run(tracker, dataset, 0.9, constant_model(0))
    assert (
        promote_now(tracker, parent, runs, dataset, "any_improvement")["champion.alias"]
        == "champion"
    )
    assert aliases(tracker) == {"champion": "1"}

    worse_parent, worse = pipeline_run(tracker, dataset, 0.05)
    kept = promote_now(tracker, worse_parent, worse, dataset, "any_improvement")
    assert kept["champion.alias"] == "challenger"
    assert kept["champion.previous_version"] == "1"
    assert aliases(tracker) == {"champion": "1", "challenger": "2"}
    current = tracker.client.get_run(worse_parent).data.metrics
    assert current["champion.current_test_accuracy"] == pytest.approx(0.1)

    # Equal is not better: the champion stays.
    tie_parent, tie = pipeline_run(tracker, dataset, 0.1)
    assert (
        promote_now(tracker, tie_parent, tie, dataset, "any_improvement")["champion.alias"]
        == "challenger"
    )
    assert aliases(tracker)["champion"] == "1"

    # Better than 0.1 (though below the champion's own stale 0.9): it takes the place.
    better_parent, better = pipeline_run(tracker, dataset, 0.5)
    taken = promote_now(tracker, better_parent, better, dataset, "any_improvement")
    assert taken["champion.alias"] == "champion"
    assert taken["champion.registered_version"] == "4"
    assert taken["champion.previous_version"] == "1"
    assert aliases(tracker)["champion"] == "4"
    tags = tracker.client.get_run(better_parent).data.tags
    assert tags["champion.alias"] == "champion" and tags["promotion.model"] == "vgg"
