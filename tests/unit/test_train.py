"""The fit loop on a few learnable images: per-epoch reports, split sizes, evaluation.

What the loop does is the same for any model: the tests fit a tiny one (tests/standins.py),
and a chapter model only where what they check is the chapter model's (its precision)."""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest

from fmnist.stages.evaluate import evaluate_model
from fmnist.stages.load import CLASS_NAMES
from fmnist.stages.models import build_model
from fmnist.stages.train import (
    _reporting_callback,
    backend_and_device,
    build_for_training,
    seed_everything,
    train_model,
)
from tests.helpers import fit_params, learnable_images
from tests.standins import tiny_model


@pytest.fixture(scope="module")
def tiny():
    return learnable_images(16)  # 160 samples, every class


def test_every_epoch_is_reported_with_its_metrics(tiny):
    x, y = tiny
    seen = []
    result = train_model(
        tiny_model(),
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
        model = tiny_model()  # with dropout: the seed reaches the fit's random draws too
        return train_model(model, x, y, fit_params(epochs=1), seed=seed).history["loss"]

    first, again, other = run(5), run(5), run(6)
    assert first == pytest.approx(again, rel=1e-5)
    assert first != pytest.approx(other, rel=1e-5)


def test_evaluation_matches_keras_accuracy(tiny):
    x, y = tiny
    result = train_model(tiny_model(), x, y, fit_params(epochs=1), seed=1)
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
    # The backend this session runs under (KERAS_BACKEND; CI runs the unit tests on two).
    assert env["backend"] == keras.backend.backend() == os.environ["KERAS_BACKEND"]
    assert env["device"]


def test_mixed_precision_computes_in_16_bits_with_a_float32_softmax(tiny):
    x, y = tiny
    params = fit_params(epochs=1, batch_size=32, precision="mixed_bfloat16")
    model = build_for_training(lambda: build_model("pool_dropout"), params, seed=0)
    conv = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    assert conv.compute_dtype == "bfloat16" and conv.variable_dtype == "float32"
    assert model.layers[-1].compute_dtype == "float32"
    # The policy does not leak into the next model built in this process.
    assert keras.mixed_precision.dtype_policy().name == "float32"
    assert build_model("pool_dropout").layers[1].compute_dtype == "float32"
    result = train_model(model, x, y, params, seed=0)
    assert np.isfinite(result.history["loss"]).all()
    assert str(model.predict(x[:4], verbose=0).dtype) == "float32"


def test_compiled_steps_several_per_call_report_every_epoch():
    # 144 training images in 9 steps of 16 and 48 validation images in 3: whole calls of 3
    # steps only (a short last call would be a second XLA compilation: seconds more).
    x, y = learnable_images(20)
    x, y = x[:192], y[:192]
    params = fit_params(epochs=2, batch_size=16, steps_per_execution=3, jit_compile=True)
    seen = []
    result = train_model(tiny_model(), x, y, params, on_epoch=lambda e, m: seen.append(e), seed=0)
    assert result.model.jit_compile is True and result.model.steps_per_execution == 3
    assert seen == [1, 2] and result.epochs_run == 2


def test_bad_fit_settings_are_refused():
    with pytest.raises(ValueError, match="precision 'float16'"):
        fit_params(precision="float16")
    with pytest.raises(ValueError, match="jit_compile 'yes'"):
        fit_params(jit_compile="yes")


def test_progress_reporter_is_async_safe_and_still_reports_batches(tiny):
    x, y = tiny
    messages: list[str] = []
    train_model(
        tiny_model(),
        x,
        y,
        fit_params(epochs=1, batch_size=32),
        progress=messages.append,
        progress_every_s=0.0,
        seed=0,
    )
    assert any("batch" in m for m in messages) and any("val_loss" in m for m in messages)
    # Keras dispatches the per-batch hook to a helper thread (no device sync per step)
    # wherever its backend allows it (JAX, torch); TensorFlow syncs each step regardless.
    reporter = _reporting_callback(None, None, 1, 1, 30.0)
    callbacks = keras.callbacks.CallbackList([reporter])
    assert reporter.async_safe
    assert callbacks._async_train == keras.src.backend.IS_THREAD_SAFE
