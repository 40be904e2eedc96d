"""The spool: tracking writes that the server could not take, kept on disk in order, per run.

When the tracking server is away, a write (metrics, params, tags, an artifact, the model, the
run's end) is appended to `<spool>/<run_id>/ops.jsonl`, with any file it needs beside it,
instead of stopping training. Later writes of that run go to the spool too, behind it, so
the order holds; the tracker tries to flush the spool, oldest first, as the run goes on and
when it ends. Whatever is still there afterwards is uploaded by `fmnist spool upload`.
Nothing here talks to the server: the tracker replays the operations.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

OPS = "ops.jsonl"
HOLD = "retry-after"  # when the run's spool may be tried again, and the hold before that
IDS = "run-ids"  # placeholder id -> the id the server gave the run when it was created
STORE = "store"  # the tracking URI the run's writes are for
PLACEHOLDER = "pending-"  # prefix of the id of a run created while the server was away


class Spool:
    """A folder of per-run operation logs."""

    def __init__(self, root: str | Path, store: str | None = None) -> None:
        self.root = Path(root)
        self.store = store  # recorded with each run's writes: which store they are for

    def folder(self, run_id: str) -> Path:
        """Where a run's operations and files are kept."""
        return self.root / run_id

    def append(
        self,
        run_id: str,
        op: str,
        args: dict[str, Any],
        write_file: Callable[[Path], None] | None = None,
    ) -> None:
        """Add an operation at the end of a run's log (and the file it needs, if any)."""
        folder = self.folder(run_id)
        folder.mkdir(parents=True, exist_ok=True)
        if self.store is not None and not (folder / STORE).is_file():
            (folder / STORE).write_text(self.store)
        if write_file is not None:
            blob = folder / f"file-{uuid.uuid4().hex[:12]}"
            blob.mkdir()
            write_file(blob)
            args = {**args, "blob": blob.name}
        with (folder / OPS).open("a") as fh:
            fh.write(json.dumps({"op": op, "args": args}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())  # kept means on disk: the process may die next

    def ops(self, run_id: str) -> list[dict[str, Any]]:
        """A run's kept operations, oldest first."""
        path = self.folder(run_id) / OPS
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def pending(self, run_id: str) -> int:
        """How many operations of a run are waiting."""
        return len(self.ops(run_id))

    def blob(self, run_id: str, name: str) -> Path:
        """The folder holding an operation's file."""
        return self.folder(run_id) / name

    def done(self, run_id: str, count: int) -> None:
        """Drop a run's first `count` operations (uploaded); the folder goes with the last."""
        ops = self.ops(run_id)
        rest = ops[count:]
        folder = self.folder(run_id)
        if not rest:
            shutil.rmtree(folder, ignore_errors=True)
            return
        for op in ops[:count]:
            if "blob" in op["args"]:
                shutil.rmtree(folder / op["args"]["blob"], ignore_errors=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".ops.", suffix=".partial")
        with os.fdopen(fd, "w") as fh:
            fh.writelines(json.dumps(op) + "\n" for op in rest)
        os.replace(tmp, folder / OPS)

    def hold(self, run_id: str, seconds: float, longest: float) -> None:
        """Do not try this run's spool again for a while (the server was away just now):
        `seconds` the first time, twice the last hold after that, at most `longest`.

        Kept beside the operations, not in memory: every process writing the run, and
        `fmnist spool upload`, sees it.
        """
        folder = self.folder(run_id)
        if not folder.is_dir():
            return
        _, last = self._hold(run_id)
        wait = min(longest, 2 * last) if last else seconds
        (folder / HOLD).write_text(f"{time.time() + wait} {wait}\n")

    def _hold(self, run_id: str) -> tuple[float, float]:
        try:
            until, wait = (self.folder(run_id) / HOLD).read_text().split()
            return float(until), float(wait)
        except (OSError, ValueError):
            return 0.0, 0.0

    def held(self, run_id: str) -> bool:
        """Whether the run's spool is still on hold (see `hold`)."""
        return time.time() < self._hold(run_id)[0]

    # -- runs created while the server was away ---------------------------------------------

    def placeholder(self) -> str:
        """A new id for a run the server could not create yet."""
        return f"{PLACEHOLDER}{uuid.uuid4().hex}"

    def map_id(self, placeholder: str, run_id: str) -> None:
        """Record the id the server gave a run created from the spool (kept for good: the
        process that made the run may go on writing under its placeholder)."""
        folder = self.root / IDS
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".", suffix=".partial")
        with os.fdopen(fd, "w") as fh:
            fh.write(run_id)
        os.replace(tmp, folder / placeholder)

    def resolve(self, run_id: str) -> str:
        """The server's id of a run: itself, or what its placeholder was mapped to."""
        if not run_id.startswith(PLACEHOLDER):
            return run_id
        try:
            return (self.root / IDS / run_id).read_text().strip() or run_id
        except OSError:
            return run_id

    def store_of(self, run_id: str) -> str | None:
        """The tracking URI a run's kept writes are for (None if not recorded)."""
        try:
            return (self.folder(run_id) / STORE).read_text().strip()
        except OSError:
            return None

    def runs(self) -> list[str]:
        """The runs with operations waiting."""
        if not self.root.is_dir():
            return []
        return sorted(p.parent.name for p in self.root.glob(f"*/{OPS}"))
