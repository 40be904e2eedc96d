"""supervisord's config as the stack renders it, without starting supervisord: each program's
section, the quoting of commands and values, and the file's privacy."""

from __future__ import annotations

import configparser
import shlex
import stat
from pathlib import Path

import pytest

from fmnist.stack import StackError
from fmnist.stack.supervisor import Program, Supervisor, _escape, _quote


def test_a_programs_section(tmp_path: Path) -> None:
    program = Program(
        name="mlflow-server",
        command=["/venv/bin/python", "-m", "mlflow", "server", "--app-name", "basic auth"],
        environment={"HOME": "/home/x", "RATE": "50%"},
        user="fmnist-server",
        directory="/srv/state",
        stopsignal="INT",
        stopwaitsecs=12,
        startsecs=7,
        umask="077",
    )
    assert program.section(tmp_path).splitlines() == [
        "[program:mlflow-server]",
        'command=/venv/bin/python -m mlflow server --app-name "basic auth"',
        "directory=/srv/state",
        "autostart=false",
        "autorestart=true",
        "startsecs=7",
        "startretries=5",
        "stopsignal=INT",
        "stopwaitsecs=12",
        "stopasgroup=true",
        "killasgroup=true",
        "redirect_stderr=true",
        f"stdout_logfile={tmp_path}/mlflow-server.log",
        "stdout_logfile_maxbytes=10MB",
        "stdout_logfile_backups=3",
        "user=fmnist-server",
        "umask=077",
        'environment=HOME="/home/x",RATE="50%%"',
    ]
    assert program.section(tmp_path).endswith("\n")


def test_a_programs_defaults(tmp_path: Path) -> None:
    lines = Program(name="worker-cpu", command=["prefect", "worker"]).section(tmp_path)
    assert lines.splitlines()[1:10] == [
        "command=prefect worker",
        "directory=/",
        "autostart=false",
        "autorestart=true",
        "startsecs=3",
        "startretries=5",
        "stopsignal=TERM",
        "stopwaitsecs=30",
        "stopasgroup=true",
    ]
    assert not any(ln.startswith(("user=", "umask=", "environment=")) for ln in lines.splitlines())


def test_values_are_escaped_for_supervisord() -> None:
    assert _escape("a%b%%c") == "a%%b%%%%c"  # supervisord expands %(name)s
    assert _escape("XX, x X") == "XX, x X"  # any other character as it is
    for bad in ('say "hi"', "two\nlines", "cr\rhere"):
        with pytest.raises(StackError, match="cannot pass a value with quotes or newlines"):
            _escape(bad)
    assert _quote("plain") == "plain"
    assert _quote("") == '""'
    assert _quote("two words") == '"two words"'
    assert _quote("tab\there") == '"tab\there"'
    assert _quote("50%") == "50%%"
    # supervisord splits command= as a POSIX shell would: the words come back as given.
    words = ["python", "-c", "print(1)", "with space", ""]
    assert shlex.split(" ".join(_quote(w) for w in words)) == words


def test_the_config_file_is_private_and_complete(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path / "state")
    programs = [
        Program(name="postgres", command=["postgres", "-D", "/data"]),
        Program(name="prefect-server", command=["prefect", "server", "start"]),
    ]
    supervisor.write_config(programs)
    path = supervisor.config_path
    state = (tmp_path / "state").resolve()
    assert supervisor.state_dir == state
    assert supervisor.run_dir == state / "supervisor"
    assert supervisor.log_dir == state / "logs"
    assert path == state / "supervisor" / "supervisord.conf"
    assert supervisor.socket_path == state / "supervisor" / "supervisor.sock"
    assert supervisor.pid_path == state / "supervisor" / "supervisord.pid"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(supervisor.run_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(supervisor.log_dir.stat().st_mode) == 0o750
    parser = configparser.RawConfigParser()
    parser.read_string(path.read_text())
    assert parser.sections() == [
        "unix_http_server",
        "supervisord",
        "rpcinterface:supervisor",
        "supervisorctl",
        "program:postgres",
        "program:prefect-server",
    ]
    assert parser["unix_http_server"]["file"] == str(supervisor.socket_path)
    assert parser["unix_http_server"]["chmod"] == "0700"
    assert parser["supervisord"]["pidfile"] == str(supervisor.pid_path)
    assert parser["supervisord"]["logfile"] == str(supervisor.log_dir / "supervisord.log")
    assert parser["supervisord"]["childlogdir"] == str(supervisor.log_dir)
    assert parser["supervisord"]["identifier"] == "fmnist-stack"
    assert parser["supervisorctl"]["serverurl"] == f"unix://{supervisor.socket_path}"
    assert parser["program:postgres"]["command"] == "postgres -D /data"
    # Rewritten on every start: a second write replaces the first, and stays private.
    path.chmod(0o644)
    supervisor.write_config(programs[:1])
    assert "program:prefect-server" not in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_config_and_its_folder_are_born_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fmnist.stack.supervisor as supervisor_mod

    # Made 0700 and 0600 at creation, not only chmodded after: never open to others, even
    # for a moment (the chmods after them are for what an older version left).
    monkeypatch.setattr(supervisor_mod.os, "chmod", lambda *args, **kwargs: None)
    supervisor = Supervisor(tmp_path / "state")
    supervisor.write_config([Program(name="postgres", command=["postgres"])])
    assert stat.S_IMODE(supervisor.run_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(supervisor.config_path.stat().st_mode) == 0o600
