"""The fit loop on a few real images: per-epoch reports, split sizes, evaluation."""

from __future__ import annotations

import numpy as np
import pytest

from stages.evaluate import evaluate_model
from stages.load import CLASS_NAMES
from stages.models import build_model
from stages.train import backend_and_device, seed_everything, train_model
from tests.conftest import fit_params


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(0)
    y = np.tile(np.arange(10), 16).astype(np.int32)  # 160 samples, every class
    # Class-dependent brightness makes the task learnable in a couple of epochs.
    x = (rng.random((160, 28, 28, 1)) * 0.2 + (y[:, None, None, None] / 12.0)).astype(np.float32)
    return x, y


def test_every_epoch_is_reported_with_its_metrics(tiny):
    x, y = tiny
    seen = []
    result = train_model(
        build_model("pool_dropout"),
        x,
        y,
        fit_params(epochs=2, batch_size=32),
        on_epoch=lambda epoch, metrics: seen.append((epoch, metrics)),
        seed=0,
    )
    assert [e for e, _ in seen] == [1, 2]
    for _, metrics in seen:
        assert {"loss", "accuracy", "val_loss", "val_accuracy", "epoch_seconds"} <= set(metrics)
        assert metrics["epoch_seconds"] > 0
    assert result.train_samples == 120 and result.val_samples == 40
    assert result.epochs_run == 2
    assert len(result.history["val_accuracy"]) == 2
    assert result.samples_per_second > 0


def test_seeded_training_is_repeatable(tiny):
    x, y = tiny

    def run(seed: int) -> list[float]:
        seed_everything(seed)
        model = build_model("conv_only")
        return train_model(model, x, y, fit_params(epochs=1), seed=seed).history["loss"]

    first, again, other = run(5), run(5), run(6)
    assert first == pytest.approx(again, rel=1e-5)
    assert first != pytest.approx(other, rel=1e-5)


def test_evaluation_matches_keras_accuracy(tiny):
    x, y = tiny
    result = train_model(build_model("pool_dropout"), x, y, fit_params(epochs=1), seed=1)
    ev = evaluate_model(result.model, x, y, CLASS_NAMES)
    predicted = np.argmax(result.model.predict(x, verbose=0), axis=1)
    assert ev.accuracy == pytest.approx(float((predicted == y).mean()), abs=1e-6)
    assert ev.confusion.sum() == len(y)
    assert np.trace(ev.confusion) / len(y) == pytest.approx(ev.accuracy, abs=1e-6)


def test_too_little_data_is_a_clear_error():
    x = np.zeros((1, 28, 28, 1), np.float32)
    with pytest.raises(ValueError, match="no training or validation data"):
        train_model(build_model("pool_dropout"), x, np.zeros(1, np.int32), fit_params())


def test_backend_and_device_are_reported():
    env = backend_and_device()
    assert env["backend"] == "tensorflow"
    assert env["device"]
