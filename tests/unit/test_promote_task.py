"""The promote-champion task applied to real runs of a local store (`.fn`, no Prefect API):
idempotent when a run is promoted again after a kill between registering and aliasing."""

from __future__ import annotations

import numpy as np
import pytest
from prefect.logging import disable_run_logger

from fmnist.conf import TrackingConfig
from fmnist.stages.load import Dataset
from fmnist.tasks import keys
from fmnist.tasks.promote import promote
from fmnist.tracking import Tracker, open_tracker

REGISTRY = "reg"


@pytest.fixture
def tracker(tmp_path, monkeypatch) -> Tracker:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    return open_tracker(f"sqlite:///{tmp_path}/mlflow.db", "unit", str(tmp_path / "artifacts"))


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    rng = np.random.default_rng(0)
    x = rng.random((20, 28, 28, 1)).astype(np.float32)
    return Dataset(x, np.arange(20) % 10, x, np.arange(20) % 10, "d" * 64)


def pipeline_run(tracker: Tracker, dataset: Dataset, accuracy: float) -> tuple[str, dict]:
    """A parent run with one finished model run (a logged Keras model scoring `accuracy`)."""
    import keras

    model = keras.Sequential(
        [keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10, "softmax")]
    )
    with tracker.run("pipeline") as parent:
        tags = {keys.MODEL: "vgg"}
        with tracker.run("vgg", parent_run_id=parent, tags=tags) as child:
            tracker.log.metrics(child, {keys.TEST_ACCURACY: accuracy, keys.TEST_LOSS: 1.0})
            tracker.log.keras_model(child, model, dataset.x_test[:2])
    return parent, tracker.child_runs(parent)


def promote_now(tracker: Tracker, parent: str, runs: dict, dataset: Dataset) -> dict:
    settings = TrackingConfig(registered_model=REGISTRY, promotion_floor=0.0)
    with disable_run_logger():
        return promote.fn(tracker, parent, runs, dataset, settings)


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
