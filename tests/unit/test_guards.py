"""The non-finite-loss gate: a diverging fit raises NonFiniteLoss naming the model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fmnist.stages.guards import (
    Diverged,
    NonFiniteLoss,
    divergence_limit,
    first_non_finite,
    stop_on_non_finite,
)
from fmnist.stages.models import build_model
from fmnist.stages.train import train_model
from tests.helpers import fit_params


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(0)
    y = np.tile(np.arange(10), 16).astype(np.int32)
    x = rng.random((160, 28, 28, 1)).astype(np.float32)
    return x, y


def test_first_non_finite():
    assert first_non_finite({"loss": 0.5, "val_loss": 0.7, "accuracy": math.nan}) is None
    assert first_non_finite({"loss": math.inf}) == ("loss", math.inf)
    key, value = first_non_finite({"loss": 0.5, "val_loss": math.nan})
    assert key == "val_loss" and math.isnan(value)
    assert first_non_finite(None) is None


def test_a_diverging_fit_raises_with_the_model_and_where(tiny):
    x, y = tiny
    seen = []
    with pytest.raises(NonFiniteLoss) as info:
        train_model(
            build_model("pool_dropout"),
            x,
            y,
            fit_params(epochs=3, batch_size=16, learning_rate=1e6),
            on_epoch=lambda epoch, metrics: seen.append(epoch),
            seed=0,
        )
    err = info.value
    assert err.model == "pool_dropout" and err.epoch == 1 and err.batch is not None
    assert "pool_dropout: non-finite loss" in str(err) and "epoch 1, batch" in str(err)
    assert seen == []  # stopped inside the first epoch, not after three


def test_epoch_end_only_check_still_stops_after_the_first_epoch(tiny):
    x, y = tiny
    model = build_model("pool_dropout")
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=1e6),
        loss="sparse_categorical_crossentropy",
    )
    with pytest.raises(NonFiniteLoss) as info:
        model.fit(
            x,
            y,
            epochs=3,
            batch_size=16,
            callbacks=[stop_on_non_finite("m", every_n_batches=0)],
            verbose=0,
        )
    assert (info.value.epoch, info.value.batch) == (1, None)


def test_the_callback_is_async_safe():
    # Keras then dispatches its batch hook on its callback thread (JAX): no device sync.
    assert stop_on_non_finite("m").async_safe is True


def test_a_runaway_finite_loss_at_an_epoch_end_is_divergence():
    limit = divergence_limit(10)
    assert limit == pytest.approx(2 * math.log(10))
    guard = stop_on_non_finite("vgg", loss_limit=limit)
    guard.on_epoch_end(0, {"loss": 2.29, "val_loss": 50.0})  # learning; val may over-fit
    with pytest.raises(Diverged, match=r"vgg: training loss 14\.5 at the end of epoch 3"):
        guard.on_epoch_end(2, {"loss": 14.5})
    stop_on_non_finite("vgg").on_epoch_end(0, {"loss": 14.5})  # no limit: not checked


def test_a_fit_that_ends_confident_and_wrong_fails_as_diverged(tiny):
    import keras

    x, y = tiny
    # Weights so large that the softmax saturates on one class: a finite loss near
    # Keras' clip (-ln 1e-7), as a blown-up model's; the tiny learning rate keeps it there.
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(
                10,
                activation="softmax",
                kernel_initializer="zeros",
                bias_initializer=keras.initializers.Constant([1e4] + [0.0] * 9),
            ),
        ]
    )
    with pytest.raises(Diverged):
        train_model(model, x, y, fit_params(epochs=1, learning_rate=1e-12), seed=0)
