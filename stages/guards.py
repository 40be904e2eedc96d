"""Quality gates during training: a non-finite loss, or a training loss far above a uniform
guess's, stops that model's training with a reason.

Keras' own TerminateOnNaN only sets `stop_training`, so the run would end "successfully" on
a NaN model; here the fit raises NonFiniteLoss (or Diverged), which the caller turns into a
FAILED run. Divergence with a finite loss: a model that guesses uniformly among K classes
has a cross-entropy of ln K (2.30 for ten); one that learns goes below it; one whose
weights blew up (a learning rate of 1e6) answers with confidence and mostly wrong, and its
loss sits near Keras' clipped maximum (-ln 1e-7 = 16.1). The training loss at an epoch's end
above `DIVERGED_FACTOR` x ln K is taken for that. Only the training loss: an over-fitting
model's validation loss may grow large and still be a model.

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
DIVERGED_FACTOR = 2.0  # x ln K: a training loss above this is no model at all


class Diverged(ArithmeticError):
    """Training ran away with a finite loss: the model is not usable."""

    def __init__(self, model: str, epoch: int, loss: float, limit: float):
        super().__init__(
            f"{model}: training loss {loss:.4g} at the end of epoch {epoch}, above {limit:.3g} "
            f"({DIVERGED_FACTOR:g} x the loss of a uniform guess): training diverged; "
            "stopped (a learning rate too high?)"
        )
        self.model, self.epoch, self.loss, self.limit = model, epoch, loss, limit


def divergence_limit(num_classes: int) -> float:
    """The training loss above which a K-class model has diverged."""
    return DIVERGED_FACTOR * math.log(num_classes)


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


def stop_on_non_finite(
    model_name: str, every_n_batches: int = 1, loss_limit: float | None = None
) -> Any:
    """A Keras callback raising NonFiniteLoss on a non-finite loss (batch and epoch end),
    and Diverged when an epoch ends with a training loss above loss_limit (if given).

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
            loss = (logs or {}).get(CHECKED[0])
            if loss_limit is not None and loss is not None and float(loss) > loss_limit:
                raise Diverged(model_name, epoch + 1, float(loss), loss_limit)

    return StopOnNonFinite()
