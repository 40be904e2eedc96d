"""The stack's ports and state folder: defaults, environment overrides, free ones for tests.

The state folder defaults to `.stack/` in the repository (FMNIST_STACK_DIR); the ports to
5433, 4200, 5000 and 5001 (FMNIST_PG_PORT, FMNIST_PREFECT_PORT, FMNIST_MLFLOW_PORT,
FMNIST_SERVING_PORT). Tests pass an explicit folder and free ports.
"""

from __future__ import annotations

import os
import socket
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path

from fmnist.stack import HOST, REPO_ROOT


def free_ports(count: int) -> list[int]:
    """count distinct TCP ports of 127.0.0.1 that nothing listens on right now (all sockets
    held open together, so the kernel hands out different ones)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for s in sockets:
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def port_in_use(port: int) -> bool:
    """Whether something already listens on 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        return s.connect_ex((HOST, port)) == 0


@dataclass(frozen=True)
class Ports:
    """The stack's ports."""

    postgres: int = 5433
    prefect: int = 4200
    mlflow: int = 5000
    serving: int = 5001

    @classmethod
    def from_env(cls) -> Ports:
        """Defaults, overridden by FMNIST_PG_PORT, FMNIST_PREFECT_PORT, FMNIST_MLFLOW_PORT,
        FMNIST_SERVING_PORT."""
        default = cls()
        return cls(
            postgres=int(os.environ.get("FMNIST_PG_PORT", default.postgres)),
            prefect=int(os.environ.get("FMNIST_PREFECT_PORT", default.prefect)),
            mlflow=int(os.environ.get("FMNIST_MLFLOW_PORT", default.mlflow)),
            serving=int(os.environ.get("FMNIST_SERVING_PORT", default.serving)),
        )

    @classmethod
    def free(cls) -> Ports:
        """Free ports, one each (tests)."""
        return cls(*free_ports(len(fields(cls))))


def default_state_dir() -> Path:
    """FMNIST_STACK_DIR, else `.stack/` in the repository."""
    return Path(os.environ.get("FMNIST_STACK_DIR", REPO_ROOT / ".stack")).resolve()


def temp_state_dir(prefix: str = "fmnist-stack-") -> Path:
    """A fresh state folder under the system temp dir that the services' users can enter."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)  # mkdtemp makes it 0700: postgres and the services' users pass through
    return path
