"""A flow that tries what any flow run's code could: read the servers' secrets, files and
process environments, and write MLflow's auth database and artifact store behind the
server's back. tests/service/test_separation.py deploys it on the stack's cpu pool, so it
runs exactly as a flow run does (started by the worker, as the worker's user).

It writes a JSON report of what worked: outcomes only, never a value it read. Standard
library and Prefect only: the worker loads this file by path.
"""

from __future__ import annotations

import errno
import json
import os
import uuid
from pathlib import Path

from prefect import flow


def _outcome(exc: OSError | None) -> str:
    if exc is None:
        return "ok"
    return errno.errorcode.get(exc.errno or 0, type(exc).__name__)


def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as exc:
        return _outcome(exc)
    return "ok"


def _write(path: str) -> str:
    """Open a file for appending (writing nothing), or create and remove one in a folder."""
    target = Path(path)
    try:
        if target.is_dir():
            made = target / f"probe-{uuid.uuid4().hex}"
            made.write_bytes(b"")
            made.unlink()
        else:
            with open(target, "ab"):
                pass
    except OSError as exc:
        return _outcome(exc)
    return "ok"


@flow(name="separation-probe")
def probe(report: str, read: list[str], write: list[str], environ_of: list[int]) -> None:
    """Try each read, write and /proc/<pid>/environ; write the outcomes to `report`."""
    own = Path("/proc/self/environ").read_bytes().split(b"\0")
    results = {
        "uid": os.getuid(),
        "read": {path: _read(path) for path in read},
        "write": {path: _write(path) for path in write},
        "environ": {str(pid): _read(f"/proc/{pid}/environ") for pid in environ_of},
        # Its own credentials it does have: the names, never the values.
        "own_credentials": sorted(
            item.split(b"=", 1)[0].decode()
            for item in own
            if item.startswith((b"PREFECT_API_AUTH_STRING=", b"MLFLOW_TRACKING_PASSWORD="))
        ),
    }
    Path(report).write_text(json.dumps(results, indent=1))
