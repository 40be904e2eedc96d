"""Which tracked runs still have a live process behind them, told by a lock file.

The process that owns a run holds an exclusive lock (flock) on `<folder>/owner.lock` for the
run's whole life. The operating system drops the lock when the process ends, however it ends
(exit, SIGKILL, OOM kill), so a lock that can be taken means nobody is behind the run any
more. A run whose lock file is not in this folder (made on another machine) is never judged.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = "owner.lock"


class RunOwned(RuntimeError):
    """Another live process owns the run."""


@contextmanager
def own(folder: Path) -> Iterator[None]:
    """Hold the run's ownership lock for the duration of the block; RunOwned if taken.

    The folder (the run's checkpoints with the lock) is removed when the block ends, unless
    it ends by an interrupt (KeyboardInterrupt, SystemExit): that run can be resumed.
    """
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    keep = False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            keep = True  # not ours
            raise RunOwned(f"{folder}: the run is owned by a live process") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    except BaseException as exc:
        keep = keep or not isinstance(exc, Exception)  # an interrupt: resumable, kept
        raise
    finally:
        os.close(fd)  # closing drops the lock
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


def orphaned(folder: Path) -> bool:
    """True if folder records a run whose owning process is gone (its lock is free)."""
    path = folder / LOCK_FILE
    if not path.is_file():
        return False  # not a run of this machine: nothing can be told
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True
