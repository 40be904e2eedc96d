"""`make` builds the venv from a Python the stack's service users can run (issue 18, item 7):
a newcomer whose `python3` is pyenv's under /root (mode 0700) gets Debian's /usr/bin/python3
instead, so `make stack-up` just works; a `python3` others can reach is kept.

Checked with `make -n` (the commands it would run, none run) against a stand-in for pyenv:
a folder holding a `python3` link, first closed to others as /root is, then open.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fmnist.stack import REPO_ROOT
from fmnist.stack.ports import temp_state_dir
from tests.skips import missing

pytestmark = pytest.mark.service

DEBIAN_PYTHON = Path("/usr/bin/python3")


def _venv_command(path_first: Path, venv: Path) -> str:
    """The line of `make -n` that would create the venv, with path_first leading PATH."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"}
    env["PATH"] = f"{path_first}:{env.get('PATH', '/usr/bin:/bin')}"
    result = subprocess.run(
        ["make", "-n", "-s", f"{venv}/.installed", f"VENV={venv}"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    [line] = [line for line in result.stdout.splitlines() if " -m venv " in line]
    return line


@pytest.fixture
def pyenv_like() -> Iterator[Path]:
    """A bin folder with a `python3` link to a real interpreter, under a folder of its own
    (in /tmp itself: pytest's tmp_path lies in a folder only root enters)."""
    if shutil.which("make") is None:
        pytest.skip(missing("make", "apt-get install make"))
    if os.geteuid() != 0:
        pytest.skip("only root's stack runs services as other users")
    if not DEBIAN_PYTHON.exists():
        pytest.skip(missing(str(DEBIAN_PYTHON), "apt-get install python3"))
    root = temp_state_dir("fmnist-make-")  # mode 0755
    home = root / "home"
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "python3").symlink_to(DEBIAN_PYTHON)
    try:
        yield home
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_python3_others_cannot_enter_is_replaced_by_debians(pyenv_like: Path, tmp_path: Path):
    pyenv_like.chmod(0o700)  # as /root is
    line = _venv_command(pyenv_like / "bin", tmp_path / "venv")
    assert line.split(" || ")[1].split()[0] == str(DEBIAN_PYTHON), line


def test_a_python3_others_can_run_is_kept(pyenv_like: Path, tmp_path: Path):
    pyenv_like.chmod(0o755)
    line = _venv_command(pyenv_like / "bin", tmp_path / "venv")
    assert line.split(" || ")[1].split()[0] == str(pyenv_like / "bin" / "python3"), line


def test_python_on_the_command_line_wins(tmp_path: Path):
    result = subprocess.run(
        ["make", "-n", "-s", f"{tmp_path}/v/.installed", f"VENV={tmp_path}/v", "PYTHON=python3.x"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert f"|| python3.x -m venv {tmp_path}/v" in result.stdout, result.stdout + result.stderr
