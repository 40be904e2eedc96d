"""The service family's sweep: a stack whose test session died is removed; others stay."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import sweep_dead_sessions
from tests.service_fixtures import STATE_PREFIX


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_only_the_stacks_of_dead_sessions_are_swept(tmp_path):
    dead = tmp_path / f"{STATE_PREFIX}{dead_pid()}-abc"
    alive = tmp_path / f"{STATE_PREFIX}{os.getpid()}-def"  # a suite running beside this one
    unnamed = tmp_path / f"{STATE_PREFIX}ghijkl"  # no pid in its name: not ours to judge
    for folder in (dead, alive, unnamed):
        (folder / "logs").mkdir(parents=True)
    assert sweep_dead_sessions(STATE_PREFIX, stacks=True, tmp=tmp_path) == [dead.name]
    assert not dead.exists() and alive.is_dir() and unnamed.is_dir()
