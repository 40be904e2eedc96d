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
HOLD = "retry-after"  # wall-clock time before which the run's spool is not tried again


class Spool:
    """A folder of per-run operation logs."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

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

    def hold(self, run_id: str, seconds: float) -> None:
        """Do not try this run's spool again for `seconds` (the server was away just now).

        Kept beside the operations, not in memory: every process writing the run, and
        `fmnist spool upload`, sees it.
        """
        folder = self.folder(run_id)
        if folder.is_dir():
            (folder / HOLD).write_text(f"{time.time() + seconds}\n")

    def held(self, run_id: str) -> bool:
        """Whether the run's spool is still on hold (see `hold`)."""
        try:
            until = float((self.folder(run_id) / HOLD).read_text())
        except (OSError, ValueError):
            return False
        return time.time() < until

    def runs(self) -> list[str]:
        """The runs with operations waiting."""
        if not self.root.is_dir():
            return []
        return sorted(p.parent.name for p in self.root.glob(f"*/{OPS}"))
