"""Training: compile a registry model the chapter's way and fit it, reporting each epoch.

Plain keras + numpy (no prefect, no mlflow): whoever calls `train_model` decides where the
per-epoch figures go through the `on_epoch` callback (MLflow, logs, a progress artifact).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from fmnist.stages.checkpoint import checkpoint_callback, resume_from
from fmnist.stages.guards import divergence_limit, stop_on_non_finite
from fmnist.stages.params import FromSettings

EpochCallback = Callable[[int, dict[str, float]], None]
"""Called after each epoch with (epoch starting at 1, {loss, accuracy, val_loss, ...})."""

ProgressCallback = Callable[[str], None]

# What each epoch reports: Keras' history keys (with the chapter's one metric, accuracy), and
# the epoch's wall time, which the reporter adds.
LOSS, ACCURACY, VAL_LOSS, VAL_ACCURACY = "loss", "accuracy", "val_loss", "val_accuracy"
HISTORY_KEYS = (LOSS, ACCURACY, VAL_LOSS, VAL_ACCURACY)
EPOCH_SECONDS = "epoch_seconds"

Precision = Literal["float32", "mixed_bfloat16", "mixed_float16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)


@dataclass(frozen=True)
class FitParams(FromSettings):
    """How to fit; the values come from the train config (conf/schema.py holds the defaults).

    jit_compile and steps_per_execution change how the steps execute, not what they compute;
    precision (a Keras dtype policy) applies when the model is built: see build_for_training.
    """

    epochs: int
    batch_size: int
    validation_split: float
    learning_rate: float
    steps_per_execution: int
    jit_compile: bool | str
    precision: Precision

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r}: choose one of {PRECISIONS}")
        if self.jit_compile not in (True, False, "auto"):
            raise ValueError(f"jit_compile {self.jit_compile!r}: true, false or 'auto'")


@dataclass
class TrainResult:
    """A trained model and what its training measured."""

    model: Any
    history: dict[str, list[float]]
    train_samples: int
    val_samples: int
    seconds: float
    epochs_run: int
    initial_epoch: int = 0  # epochs already done by a checkpoint this run resumed from
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def samples_per_second(self) -> float:
        """Training throughput over the epochs this call ran (validation passes included)."""
        return self.train_samples * self.epochs_run / self.seconds if self.seconds else 0.0


def backend_and_device() -> dict[str, str]:
    """The Keras backend and the device it computes on, e.g. backend jax, device gpu:H200."""
    import keras

    backend = keras.backend.backend()
    device = "cpu"
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            if gpus:
                details = tf.config.experimental.get_device_details(gpus[0])
                device = f"gpu:{details.get('device_name', gpus[0].name)}"
        elif backend == "jax":
            import jax

            dev = jax.devices()[0]
            device = f"{dev.platform}:{getattr(dev, 'device_kind', dev.platform)}"
        elif backend == "torch":
            import torch

            if torch.cuda.is_available():
                device = f"gpu:{torch.cuda.get_device_name(0)}"
    except Exception as exc:  # a device query must never stop training
        device = f"unknown ({exc.__class__.__name__})"
    return {"backend": backend, "device": device, "cpu_count": str(os.cpu_count())}


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and the backend; call it before building a model to fix its weights."""
    import keras

    keras.utils.set_random_seed(seed)


@contextmanager
def dtype_policy(precision: str) -> Iterator[None]:
    """Keras' global dtype policy set to `precision` for a block, then put back.

    Layers take the policy in force when they are built; putting it back keeps it from
    leaking into the next model (or the evaluation) in the same process.
    """
    import keras

    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: choose one of {PRECISIONS}")
    saved = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy(saved)


def build_for_training(build: Callable[[], Any], params: FitParams, seed: int | None = None) -> Any:
    """Seed, then build the model under the precision policy of `params`.

    `build` is called after the policy is set: a mixed policy reaches every layer, while the
    builders keep the softmax output in float32 (stages/models.py), as Keras' mixed
    precision guide asks for numerically stable losses.
    """
    if seed is not None:
        seed_everything(seed)  # before building: the initial weights depend on it
    with dtype_policy(params.precision):
        return build()


def compile_model(model: Any, params: FitParams) -> Any:
    """Adam + sparse categorical cross-entropy + accuracy, as in the chapter."""
    import keras

    # Keywords, not positions: compile's third positional argument is loss_weights.
    # A model built under mixed_float16 gets a LossScaleOptimizer from compile itself.
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=params.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=[ACCURACY],
        steps_per_execution=params.steps_per_execution,
        jit_compile=params.jit_compile,
    )
    return model


def _reporting_callback(
    on_epoch: EpochCallback | None,
    progress: ProgressCallback | None,
    epochs: int,
    steps: int,
    every_s: float,
):
    import keras

    class Reporter(keras.callbacks.Callback):
        """Times each epoch, hands its metrics on, and reports long epochs as they go."""

        # A callback that overrides on_train_batch_end makes Keras wait for every step's
        # results before the next step starts (JAX, torch), unless it declares itself
        # async-safe: Keras 3 then runs it in a helper thread (CallbackList's
        # _configure_async_dispatch), where it also converts the step's logs, while the main
        # thread dispatches the next step. This one only reads the clock and, at most every
        # `every_s` seconds, the loss; it touches no model state. (On TensorFlow Keras syncs
        # each call of the compiled step anyway: steps_per_execution is the lever there.)
        async_safe = True

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch = epoch + 1
            self._t0 = self._last = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            now = time.perf_counter()
            if progress and now - self._last >= every_s:
                self._last = now
                loss = (logs or {}).get(LOSS)
                shown = f", loss {loss:.4f}" if loss is not None else ""
                progress(f"epoch {self._epoch}/{epochs}: batch {batch + 1}/{steps}{shown}")

        def on_epoch_end(self, epoch, logs=None):
            metrics = {k: float(v) for k, v in (logs or {}).items()}
            metrics[EPOCH_SECONDS] = time.perf_counter() - self._t0
            if on_epoch:
                on_epoch(epoch + 1, metrics)
            if progress:
                shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
                progress(f"epoch {epoch + 1}/{epochs}: {shown}")

    return Reporter()


def train_model(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    params: FitParams,
    *,
    on_epoch: EpochCallback | None = None,
    progress: ProgressCallback | None = None,
    progress_every_s: float = 30.0,
    seed: int | None = None,
    verbose: int = 0,
    checkpoint_dir: Path | None = None,
    on_warning: ProgressCallback | None = None,
) -> TrainResult:
    """Compile and fit; validation is the last `validation_split` of x, as in Keras' fit.

    With checkpoint_dir, every completed epoch is checkpointed there (stages/checkpoint.py),
    and a checkpoint already there is resumed from: only the epochs after it are trained.
    """
    import keras

    if seed is not None:
        # Seeds shuffling and dropout; weight initialisation was seeded (or not) by
        # whoever built the model: see seed_everything.
        keras.utils.set_random_seed(seed)
    n_val = int(len(x) * params.validation_split)
    n_train = len(x) - n_val
    if n_train < 1 or n_val < 1:
        raise ValueError(
            f"{len(x)} samples leave no training or validation data at split "
            f"{params.validation_split}"
        )
    compile_model(model, params)
    steps = -(-n_train // params.batch_size)
    # The guard first: a NaN or infinite loss raises NonFiniteLoss, a runaway finite one
    # Diverged, naming the model before anything is reported or checkpointed
    # (stages/guards.py). Then the reporter: an epoch's metrics are handed on before its
    # checkpoint is written, so a resumed run never lacks an epoch's metrics (it may have
    # one it trains again).
    callbacks = [
        stop_on_non_finite(model.name, loss_limit=divergence_limit(model.output_shape[-1])),
        _reporting_callback(on_epoch, progress, params.epochs, steps, progress_every_s),
    ]
    initial_epoch = 0
    if checkpoint_dir is not None:
        initial_epoch = resume_from(model, checkpoint_dir, on_warning)
        if initial_epoch and seed is not None:
            keras.utils.set_random_seed(seed + initial_epoch)  # see stages/checkpoint.py
        callbacks.append(checkpoint_callback(checkpoint_dir))
    t0 = time.perf_counter()
    history = model.fit(
        x,
        y,
        epochs=params.epochs,
        initial_epoch=initial_epoch,
        batch_size=params.batch_size,
        validation_split=params.validation_split,
        callbacks=callbacks,
        verbose=verbose,
    )
    seconds = time.perf_counter() - t0
    hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    return TrainResult(
        model=model,
        history=hist,
        train_samples=n_train,
        val_samples=n_val,
        seconds=seconds,
        epochs_run=len(history.epoch),
        initial_epoch=initial_epoch,
    )
