"""What the stack's server and worker programs share: the venv they run from, their base
environment, the launcher that hands each its secrets, and a plain health probe.

The programs themselves: stack/prefect_services.py (Prefect server and workers),
stack/mlflow_server.py (the MLflow server) and stack/postgres.py; who runs them:
stack/users.py.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from pathlib import Path

from fmnist.stack import REPO_ROOT
from fmnist.stack.secrets import env_file_text
from fmnist.stack.users import ServiceUser, private_file


def venv_bin() -> Path:
    """The virtual environment's bin folder: the running interpreter's, else the repo's .venv."""
    here = Path(sys.executable).parent  # not resolved: a venv's python is a symlink
    return here if (here / "prefect").exists() else REPO_ROOT / ".venv" / "bin"


def ok(url: str, timeout: float = 10) -> bool:
    """Whether an unauthenticated GET of url answers 200 (connection errors count as no)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except (OSError, urllib.error.HTTPError):  # refused, reset, timed out, 4xx/5xx
        return False


def base_env(home: Path) -> dict[str, str]:
    """The environment every program starts from (no secret: those come from its env file)."""
    return {
        "HOME": str(home),
        "PATH": f"{venv_bin()}:/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_CLI_PROMPT": "false",  # stdin is /dev/null: a prompt would only hang
    }


def launched(
    argv: list[str],
    *,
    env_file: Path,
    secrets: dict[str, str],
    user: ServiceUser | None,
    pgid_file: Path | None = None,
) -> list[str]:
    """argv run through stack.launch, with its secrets written to env_file (0600, owned by
    the program's user): they never appear in supervisord's config or on a command line."""
    private_file(env_file, env_file_text(secrets), user)
    wrapper = [str(venv_bin() / "python"), "-m", "fmnist.stack.launch", "--env-file", str(env_file)]
    if pgid_file is not None:
        wrapper += ["--pgid-file", str(pgid_file)]
    return [*wrapper, "--", *argv]
