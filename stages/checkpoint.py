"""Per-epoch checkpoints of a model in training, written atomically, and their restore.

Plain keras + the standard library. After every epoch the weights (the model's and the
optimizer's: Adam's moments and step count) go to a temporary file that is renamed into
place, then a small JSON record names the epoch and the weights file's SHA-256, again by
rename: a kill at any instant leaves either the previous checkpoint or the new one, never a
torn one, and a record whose weights do not match its digest is refused.

RNG state: Keras does not save its seed generators' state with the weights, so a resumed fit
re-seeds from (seed, epoch): the resumed epochs draw other dropout masks and shuffles than an
uninterrupted run would have, as far as the backend allows, and are repeatable.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmnist.stages.digest import sha256_file

WEIGHTS = "latest.weights.h5"
RECORD = "checkpoint.json"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used (torn, corrupt, or for another model)."""


@dataclass(frozen=True)
class Checkpoint:
    """The last completed epoch saved in a folder (1-based: 3 means epochs 1-3 are done)."""

    folder: Path
    epoch: int
    sha256: str


def _replace_atomically(folder: Path, name: str, write: Any, suffix: str = "") -> None:
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=f".partial{suffix}")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, folder / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(model: Any, folder: Path, epoch: int, **extra: Any) -> Checkpoint:
    """Save weights + optimizer state after `epoch` (1-based), atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    # Keras picks the format from the name: the temporary file must end in .weights.h5 too.
    _replace_atomically(folder, WEIGHTS, model.save_weights, suffix=".weights.h5")
    digest = sha256_file(folder / WEIGHTS)
    record = {"epoch": epoch, "sha256": digest, "saved_at": time.time(), **extra}
    _replace_atomically(folder, RECORD, lambda p: p.write_text(json.dumps(record)))
    return Checkpoint(folder, epoch, digest)


def find_checkpoint(folder: Path) -> Checkpoint | None:
    """The checkpoint in folder, or None if there is none; CheckpointError if it is unusable."""
    record_path = folder / RECORD
    if not record_path.is_file():
        return None
    try:
        record = json.loads(record_path.read_text())
        epoch, digest = int(record["epoch"]), str(record["sha256"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{record_path}: unreadable checkpoint record ({exc})") from None
    weights = folder / WEIGHTS
    if not weights.is_file() or sha256_file(weights) != digest:
        raise CheckpointError(f"{weights}: missing or not the weights its record names")
    return Checkpoint(folder, epoch, digest)


def restore_checkpoint(model: Any, checkpoint: Checkpoint) -> int:
    """Load a checkpoint into a compiled model (weights and optimizer); return its epoch."""
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)  # its slots must exist to be filled
    try:
        model.load_weights(checkpoint.folder / WEIGHTS)
    except ValueError as exc:  # another architecture
        raise CheckpointError(f"{checkpoint.folder}: does not fit this model ({exc})") from None
    return checkpoint.epoch


def checkpoint_callback(folder: Path, **extra: Any) -> Any:
    """A Keras callback that saves a checkpoint at the end of every epoch (never per batch,
    so it forces no device sync per step)."""
    import keras

    class EpochCheckpoint(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            save_checkpoint(self.model, folder, epoch + 1, **extra)

    return EpochCheckpoint()
