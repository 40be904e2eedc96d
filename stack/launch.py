"""Start a server's command after clearing what its previous run left behind.

    python -m fmnist.stack.launch PGID_FILE -- COMMAND ...

`mlflow server` runs uvicorn as a child. When the parent is killed with SIGKILL, supervisord
sees its program exit and starts it again, but the orphaned child still holds the port, so
every new start fails to bind. supervisord starts each program in a process group of its own
(the group's id is the program's pid), and the orphan stays in that group: this wrapper,
run by supervisord in place of the server, ends what is left of the previous group (only
processes of this user), records its own group, then becomes the server (exec).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path


def group_members(pgid: int) -> list[int]:
    """Live processes of a process group owned by this user (from /proc)."""
    members = []
    uid = os.getuid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] not in "ZX" and entry.stat().st_uid == uid:
                members.append(int(entry.name))
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


def main(argv: list[str]) -> int:
    """Clear the recorded group, record ours, exec the command."""
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m fmnist.stack.launch PGID_FILE -- COMMAND ...", file=sys.stderr)
        return 2
    pgid_file, command = Path(argv[0]), argv[2:]
    with contextlib.suppress(OSError, ValueError):
        old = int(pgid_file.read_text())
        if old != os.getpgrp():
            clear_group(old)
    pgid_file.write_text(f"{os.getpgrp()}\n")
    os.execvp(command[0], command)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
