"""Quality gates during training: a non-finite loss stops that model's training with a reason.

Keras' own TerminateOnNaN only sets `stop_training`, so the run would end "successfully" on
a NaN model; here the fit raises NonFiniteLoss, which the caller turns into a FAILED run.

Cost: the check reads the loss Keras already puts in the batch logs. Keras converts those
logs to Python floats for every batch anyway (CallbackList pythonifies them before calling
any callback); the callback is marked `async_safe`, so on a backend that dispatches batch
callbacks asynchronously (JAX) the check runs on Keras' callback thread and adds no device
sync to the training loop. An error raised there reaches fit at the next batch (or at the
end of the epoch), so a divergence stops training within a batch or two.
"""

from __future__ import annotations

import math
from typing import Any

# The logged values checked; the running mean of a loss stays non-finite once a batch was.
CHECKED = ("loss", "val_loss")


class NonFiniteLoss(FloatingPointError):
    """Training produced a NaN or infinite loss: the model is not usable."""

    def __init__(self, model: str, epoch: int, batch: int | None, key: str, value: float):
        where = f"epoch {epoch}" + (f", batch {batch}" if batch is not None else "")
        super().__init__(
            f"{model}: non-finite {key} ({value}) at {where}; training stopped "
            "(a learning rate too high, or bad input data?)"
        )
        self.model, self.epoch, self.batch, self.key, self.value = model, epoch, batch, key, value


def first_non_finite(logs: dict[str, Any] | None) -> tuple[str, float] | None:
    """The first checked key whose value is NaN or infinite, with the value; else None."""
    for key in CHECKED:
        value = (logs or {}).get(key)
        if value is None:
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if not math.isfinite(number):
            return key, number
    return None


def stop_on_non_finite(model_name: str, every_n_batches: int = 1) -> Any:
    """A Keras callback raising NonFiniteLoss on a non-finite loss (batch and epoch end).

    every_n_batches: check the batch logs every n batches (0: only at the end of an epoch).
    """
    import keras

    class StopOnNonFinite(keras.callbacks.Callback):
        """Raises NonFiniteLoss(model, epoch, batch) as soon as the loss is NaN or infinite."""

        async_safe = True  # see the module docstring: reads only the logs it is handed

        def __init__(self) -> None:
            super().__init__()
            self.epoch = 1

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.epoch = epoch + 1

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            if every_n_batches and (batch + 1) % every_n_batches == 0:
                bad = first_non_finite(logs)
                if bad:
                    raise NonFiniteLoss(model_name, self.epoch, batch + 1, *bad)

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            bad = first_non_finite(logs)
            if bad:
                raise NonFiniteLoss(model_name, epoch + 1, None, *bad)

    return StopOnNonFinite()
