"""Servers a command starts for itself (the local Prefect API of `fmnist run`, the scoring
servers of `fmnist serve`), started so that they die with it.

Each runs in a session of its own, so a Ctrl-C or a signal to our process group does not
reach it (we stop it ourselves, in order), and with PR_SET_PDEATHSIG, so the kernel sends it
SIGTERM when our process dies, however it dies (a SIGKILL skips every cleanup of ours).
"""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
from collections.abc import Callable, Mapping
from typing import Any

PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the OS's pick)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _die_with_parent_hook() -> Callable[[], None] | None:
    """The child's preexec_fn. The C library is looked up here, in the parent: between fork
    and exec the child only makes the one call. None where there is no prctl (not Linux)."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def hook() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

    return hook


def start_child(argv: list[str], env: Mapping[str, str], **popen: Any) -> subprocess.Popen:
    """Popen(argv) in a session of its own that the kernel stops when we die."""
    return subprocess.Popen(
        argv,
        env=dict(env),
        start_new_session=True,
        preexec_fn=_die_with_parent_hook(),
        **popen,
    )
