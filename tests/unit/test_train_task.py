"""The train task itself (`train.fn`, a stand-in tracker, no Prefect API): each epoch's
metrics logged at its own step, counted from 1 as the MLflow charts show them, the progress
bar moved after each epoch, and an epoch an earlier attempt logged not logged twice."""

from __future__ import annotations

import uuid

import pytest
from prefect.logging import disable_run_logger

import fmnist.tasks.train as train_module
from fmnist.conf import load_config
from fmnist.stages.models import REGISTRY, ModelSpec
from fmnist.tasks import keys
from fmnist.tasks.train import train
from tests.helpers import learnable_images
from tests.standins import Call, RecordingTracker, tiny_model

RUN = "run-1"
EPOCH_KEYS = {"loss", "accuracy", "val_loss", "val_accuracy", keys.EPOCH_SECONDS}


@pytest.fixture
def tiny_spec(monkeypatch) -> str:
    """A tiny model in the registry, under the name the task builds it by."""
    monkeypatch.setitem(REGISTRY, "tiny", ModelSpec("tiny", tiny_model, "a tiny CNN", 374, 0.5))
    return "tiny"


@pytest.fixture
def progress(monkeypatch) -> list[float]:
    """Prefect's progress artifact (an API call) stood in: the values the bar is moved to."""
    moved: list[float] = []
    artifact = uuid.uuid4()
    monkeypatch.setattr(train_module, "create_progress_artifact", lambda *a, **k: artifact)

    def update(artifact_id: uuid.UUID, value: float, *_: object, **__: object) -> uuid.UUID:
        assert artifact_id == artifact
        moved.append(value)
        return artifact_id

    monkeypatch.setattr(train_module, "update_progress_artifact", update)
    return moved


def run_train(model: str, tracker: RecordingTracker, epochs: int, reopened: bool = False):
    cfg = load_config("book", {"train.epochs": epochs, "train.batch_size": 16}).train
    x, y = learnable_images(4)  # 40 images: 30 to train on, 10 to validate
    with disable_run_logger():
        return train.fn(model, x, y, cfg, 0, tracker, RUN, reopened=reopened)


def test_each_epoch_is_logged_at_its_own_step_from_1(tiny_spec, progress):
    tracker = RecordingTracker()
    result = run_train(tiny_spec, tracker, epochs=3)
    per_epoch = [c for c in tracker.log.of("metrics") if "loss" in c.args["metrics"]]
    assert [c.args["step"] for c in per_epoch] == [1, 2, 3]
    for call in per_epoch:
        assert call.run_id == RUN
        assert set(call.args["metrics"]) >= EPOCH_KEYS
    # The values at each step are that epoch's, as the returned history has them.
    assert [c.args["metrics"]["val_loss"] for c in per_epoch] == result.history["val_loss"]
    assert progress == pytest.approx([100 / 3, 200 / 3, 100.0])
    # The run's totals are one value, not a point of the epoch series.
    totals = [c for c in tracker.log.of("metrics") if keys.TRAINING_SECONDS in c.args["metrics"]]
    assert [c.args["step"] for c in totals] == [0]
    sizes = tracker.log.of("params")[-1].args["params"]
    assert (sizes[keys.TRAIN_SAMPLES], sizes[keys.VAL_SAMPLES]) == (30, 10)


def test_an_epoch_an_earlier_attempt_logged_is_not_logged_again(tiny_spec, progress):
    # A resumed run that logged epoch 1 before it was killed: epoch 1 trains again (its
    # checkpoint came after its metrics), but the run keeps one value per step.
    earlier = Call("metrics", RUN, {"metrics": {keys.EPOCH_SECONDS: 1.0, "loss": 9.0}, "step": 1})
    tracker = RecordingTracker(earlier=[earlier])
    run_train(tiny_spec, tracker, epochs=2, reopened=True)
    assert tracker.steps(RUN, keys.EPOCH_SECONDS) == [2]
    assert progress == pytest.approx([50.0, 100.0])
    # A new run reads nothing back: all its epochs are logged.
    fresh = RecordingTracker(earlier=[earlier])
    run_train(tiny_spec, fresh, epochs=2)
    assert fresh.steps(RUN, keys.EPOCH_SECONDS) == [1, 2]
