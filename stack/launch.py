"""Start a program of the stack: its secrets from a private file, its predecessor's leftovers
cleared, then the program itself (exec).

    python -m fmnist.stack.launch [--env-file FILE] [--pgid-file FILE] -- COMMAND ...

--env-file: KEY=value lines added to the environment. Each program's secrets live in such a
file, mode 0600 and owned by the program's user (stack/users.py), so they are in neither
supervisord's config nor any other user's reach: once exec'd, /proc/<pid>/environ is
readable by that user and root only.

--pgid-file: `mlflow server` runs uvicorn as a child. When the parent is killed with SIGKILL,
supervisord starts it again, but the orphaned child still holds the port, so every new start
fails to bind. supervisord starts each program in a process group of its own and the orphan
stays in that group: the launcher ends what is left of the recorded group (only processes of
this user), records its own, then becomes the server.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

import psutil
from dotenv import dotenv_values


def group_members(pgid: int) -> list[int]:
    """Live processes of a process group owned by this user."""
    members = []
    uid, me = os.getuid(), os.getpid()
    for proc in psutil.process_iter(["uids", "status"]):
        if proc.pid == me or proc.info["uids"] is None or proc.info["uids"].real != uid:
            continue
        if proc.info["status"] in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(proc.pid) == pgid:
                members.append(proc.pid)
    return members


def clear_group(pgid: int, timeout: float = 15) -> None:
    """SIGTERM the group's members, SIGKILL those alive after timeout."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        members = group_members(pgid)
        for pid in members:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while members and time.monotonic() < deadline:
            time.sleep(0.2)
            members = group_members(pgid)
        if not members:
            return


def read_env_file(path: Path) -> dict[str, str]:
    """The KEY=value pairs of a private env file (python-dotenv's parser)."""
    if not os.access(path, os.R_OK):
        raise SystemExit(f"launch: cannot read {path} (as uid {os.getuid()})")
    values = dotenv_values(path, interpolate=False)  # a "$" in a value stays a "$"
    return {k: v for k, v in values.items() if v is not None}


def main(argv: list[str]) -> int:
    """Load the env file, clear the recorded group, record ours, exec the command."""
    if "--" not in argv:
        print(__doc__.splitlines()[3].strip(), file=sys.stderr)
        return 2
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="python -m fmnist.stack.launch")
    parser.add_argument("--env-file", type=Path)
    parser.add_argument("--pgid-file", type=Path)
    args = parser.parse_args(argv[:split])
    command = argv[split + 1 :]
    if not command:
        parser.error("no command after --")
    env = dict(os.environ)
    if args.env_file is not None:
        env |= read_env_file(args.env_file)
    if args.pgid_file is not None:
        with contextlib.suppress(OSError, ValueError):
            old = int(args.pgid_file.read_text())
            if old != os.getpgrp():
                clear_group(old)
        args.pgid_file.write_text(f"{os.getpgrp()}\n")
    os.execvpe(command[0], command, env)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
