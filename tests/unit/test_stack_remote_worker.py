"""`python -m fmnist.stack worker-settings > box1.sh`: the file it writes is its owner's only."""

from __future__ import annotations

import os
import stat
import sys

from fmnist.stack.__main__ import main
from fmnist.stack.remote_worker import keep_private


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_regular_file_becomes_0600_and_a_pipe_is_left_alone(tmp_path):
    path = tmp_path / "box1.sh"
    path.write_text("")
    path.chmod(0o644)  # what a shell's `>` makes under umask 022
    with open(path, "w") as out:
        assert keep_private(out.fileno())
    assert mode(path) == 0o600
    read, write = os.pipe()
    try:
        assert not keep_private(write)  # `| ssh box1 'cat > box1.sh'`: nothing to chmod
    finally:
        os.close(read)
        os.close(write)


def test_worker_settings_into_a_file_makes_it_0600_before_anything_else(
    tmp_path, monkeypatch, capsys
):
    path = tmp_path / "box1.sh"
    path.write_text("")
    path.chmod(0o644)
    with open(path, "w") as out:
        monkeypatch.setattr(sys, "stdout", out)
        # No stack runs there: the command fails, but the file was made private first.
        code = main(["worker-settings", "--name", "box1", "--state-dir", str(tmp_path / "s")])
    assert code == 1
    assert "is not running: make stack-up first" in capsys.readouterr().err
    assert mode(path) == 0o600
    assert path.read_text() == ""
