"""Per-epoch checkpoints of a model in training, written atomically, and their restore.

Plain keras + the standard library. After every epoch the weights (the model's and the
optimizer's: Adam's moments and step count) go to a temporary file that is renamed into
place, then a small JSON record names it and the one before it, with their SHA-256s, again
by rename: a kill at any instant leaves whole checkpoints only. A restore takes the newest
one that matches its digest and loads; one that does not (torn, damaged before its digest
was taken, for another model) costs one epoch, not the whole model.

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

RECORD = "checkpoint.json"
KEEP = 2  # the newest checkpoint and the one before it: one bad file costs one epoch


def weights_name(epoch: int) -> str:
    """The weights file of the checkpoint after `epoch` (Keras picks the format by suffix)."""
    return f"epoch-{epoch:04d}.weights.h5"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used (torn, corrupt, or for another model)."""


@dataclass(frozen=True)
class Checkpoint:
    """A completed epoch saved in a folder (1-based: 3 means epochs 1-3 are done)."""

    folder: Path
    epoch: int
    sha256: str

    @property
    def weights(self) -> Path:
        """Its weights file."""
        return self.folder / weights_name(self.epoch)


def _replace_atomically(folder: Path, name: str, write: Any, suffix: str = "") -> None:
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=f".partial{suffix}")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, folder / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_record(folder: Path) -> list[dict[str, Any]]:
    path = folder / RECORD
    try:
        record = json.loads(path.read_text())
        kept = record["kept"]
        return [{"epoch": int(k["epoch"]), "sha256": str(k["sha256"])} for k in kept]
    except FileNotFoundError:
        return []
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint record ({exc})") from None


def save_checkpoint(model: Any, folder: Path, epoch: int, **extra: Any) -> Checkpoint:
    """Save weights + optimizer state after `epoch` (1-based), atomically; keep the one
    before it too, and remove older ones."""
    folder.mkdir(parents=True, exist_ok=True)
    name = weights_name(epoch)
    _replace_atomically(folder, name, model.save_weights, suffix=".weights.h5")
    saved = Checkpoint(folder, epoch, sha256_file(folder / name))
    try:
        earlier = [k for k in _read_record(folder) if k["epoch"] != epoch]
    except CheckpointError:
        earlier = []  # an unreadable record: only the new checkpoint can be vouched for
    kept = [{"epoch": epoch, "sha256": saved.sha256}, *earlier][:KEEP]
    record = {"kept": kept, "saved_at": time.time(), **extra}
    _replace_atomically(folder, RECORD, lambda p: p.write_text(json.dumps(record)))
    wanted = {weights_name(k["epoch"]) for k in kept}
    for old in folder.glob("epoch-*.weights.h5"):
        if old.name not in wanted:
            old.unlink(missing_ok=True)
    return saved


def find_checkpoints(folder: Path) -> list[Checkpoint]:
    """The checkpoints a record in folder names, newest first ([] if none; CheckpointError
    if the record cannot be read). Their files are checked when restored."""
    return [Checkpoint(folder, k["epoch"], k["sha256"]) for k in _read_record(folder)]


def find_checkpoint(folder: Path) -> Checkpoint | None:
    """The newest checkpoint whose weights match their digest, None if there is none;
    CheckpointError if checkpoints are recorded but none is intact."""
    found = find_checkpoints(folder)
    for checkpoint in found:
        if checkpoint.weights.is_file() and sha256_file(checkpoint.weights) == checkpoint.sha256:
            return checkpoint
    if found:
        raise CheckpointError(f"{folder}: missing or not the weights its record names")
    return None


def restore_checkpoint(model: Any, checkpoint: Checkpoint) -> int:
    """Load a checkpoint into a compiled model (weights and optimizer); return its epoch."""
    weights = checkpoint.weights
    if not weights.is_file() or sha256_file(weights) != checkpoint.sha256:
        raise CheckpointError(f"{weights}: missing or not the weights its record names")
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)  # its slots must exist to be filled
    try:
        model.load_weights(weights)
    except ValueError as exc:  # another architecture
        raise CheckpointError(f"{weights}: does not fit this model ({exc})") from None
    except OSError as exc:  # damaged before its digest was taken (a full disk, say)
        raise CheckpointError(f"{weights}: unreadable ({exc})") from None
    return checkpoint.epoch


def clear_checkpoints(folder: Path) -> None:
    """Remove the record and every weights file: training starts over in this folder."""
    (folder / RECORD).unlink(missing_ok=True)
    for weights in folder.glob("epoch-*.weights.h5"):
        weights.unlink(missing_ok=True)


def resume_from(model: Any, folder: Path, warn: Any = None) -> int:
    """Restore the newest usable checkpoint in folder into the model; return its epoch, 0
    when none is usable (the unusable ones are then removed). Each one skipped is reported
    to `warn` with the reason."""
    try:
        candidates = find_checkpoints(folder)
    except CheckpointError as exc:
        clear_checkpoints(folder)
        if warn:
            warn(f"{exc}; training from epoch 1")
        return 0
    for checkpoint in candidates:
        try:
            return restore_checkpoint(model, checkpoint)
        except CheckpointError as exc:
            if warn:
                warn(f"{exc}; trying an earlier checkpoint")
    if candidates:
        clear_checkpoints(folder)
        if warn:
            warn(f"{folder}: no usable checkpoint; training from epoch 1")
    return 0


def checkpoint_callback(folder: Path, **extra: Any) -> Any:
    """A Keras callback that saves a checkpoint at the end of every epoch (never per batch,
    so it forces no device sync per step)."""
    import keras

    class EpochCheckpoint(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            save_checkpoint(self.model, folder, epoch + 1, **extra)

    return EpochCheckpoint()
