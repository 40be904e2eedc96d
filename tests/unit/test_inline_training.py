"""The pipeline's inline training (flows/pipeline.py) without the flow: a model that fails
is a failed outcome naming why, the models after it still train, and the run then fails
naming it. Training itself is stood in (its own tests are test_train*.py)."""

from __future__ import annotations

import pytest
from prefect.logging import disable_run_logger

from fmnist.conf import load_config
from fmnist.flows import pipeline
from fmnist.flows.pipeline import (
    TrainingRunsFailed,
    check_trained,
    failures_of,
    train_and_evaluate_all,
)
from fmnist.tasks.train import TrainingOutcome

MODELS = ["conv_only", "pool_dropout", "vgg"]


@pytest.fixture
def trained(monkeypatch) -> list[str]:
    """train_and_evaluate stood in: pool_dropout cannot be built, the others score 0.8."""
    seen: list[str] = []

    def train_and_evaluate(cfg, name, ds, augmented, run) -> TrainingOutcome:
        seen.append(name)
        if name == "pool_dropout":
            raise RuntimeError("this model cannot be built")
        return TrainingOutcome(name, f"run-{name}", 0.8)

    monkeypatch.setattr(pipeline, "train_and_evaluate", train_and_evaluate)
    return seen


def train_inline(models: list[str]) -> dict[str, TrainingOutcome]:
    cfg = load_config("smoke", {"train.models": models, "orchestration.mode": "inline"})
    with disable_run_logger():
        return train_and_evaluate_all(cfg, ds=None, augmented=None, run=None)


def test_a_model_that_fails_fails_the_run_and_the_others_still_train(trained):
    outcomes = train_inline(MODELS)
    assert trained == MODELS  # the one after the failure trained too
    assert list(outcomes) == MODELS
    assert [o.ok for o in outcomes.values()] == [True, False, True]
    broken = outcomes["pool_dropout"]
    assert broken.failure == "RuntimeError: this model cannot be built"
    assert (broken.run_id, broken.test_accuracy) == (None, None)
    assert failures_of(outcomes) == {"pool_dropout": "RuntimeError: this model cannot be built"}
    with pytest.raises(TrainingRunsFailed) as failed:
        check_trained(outcomes)
    assert str(failed.value) == (
        "1 of 3 models failed: pool_dropout: RuntimeError: this model cannot be built"
    )


def test_a_run_whose_models_all_trained_does_not_fail(trained):
    outcomes = train_inline(["conv_only", "vgg"])
    assert failures_of(outcomes) == {}
    check_trained(outcomes)  # no exception
    assert {m: o.test_accuracy for m, o in outcomes.items()} == {"conv_only": 0.8, "vgg": 0.8}


def test_an_outcome_without_a_score_is_a_failure():
    # Trained but never scored, with or without a reason: not a success.
    outcomes = {
        "vgg": TrainingOutcome("vgg", "run-vgg", None, "logged no test_accuracy"),
        "conv_only": TrainingOutcome("conv_only", "run-c", 0.7),
        "pool_dropout": TrainingOutcome("pool_dropout", "run-p"),
    }
    assert failures_of(outcomes) == {"vgg": "logged no test_accuracy", "pool_dropout": None}
    with pytest.raises(TrainingRunsFailed, match=r"^2 of 3 models failed: vgg: logged no"):
        check_trained(outcomes)


def test_a_model_stopped_by_a_signal_stops_the_run_not_just_the_model(monkeypatch):
    # A SIGTERM unwinding a model's training may surface as an ordinary error from a cleanup
    # (a report to a Prefect API already gone): the run stops there, no next model trains.
    from prefect.exceptions import TerminationSignal

    seen: list[str] = []

    def train_and_evaluate(cfg, name, ds, augmented, run) -> TrainingOutcome:
        seen.append(name)
        try:
            raise TerminationSignal(signal=15)
        except TerminationSignal:
            raise ConnectionError("the API went away") from None

    monkeypatch.setattr(pipeline, "train_and_evaluate", train_and_evaluate)
    with pytest.raises(ConnectionError):
        train_inline(MODELS)
    assert seen == ["conv_only"]
