"""The Prefect server and the workers: their supervisord programs and readiness, and a client
of the server for the stack's own process.

The API requires an auth string (PREFECT_SERVER_API_AUTH_STRING; clients send
PREFECT_API_AUTH_STRING) and allows CORS from the dashboard's own origin only. The server
runs as the server user, the workers (and so every flow run) as the worker user; each gets
its secrets from a private env file (stack/launch.py).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from fmnist.stack import HOST, REPO_ROOT
from fmnist.stack.automations import HEARTBEAT_S
from fmnist.stack.mlflow_server import MLFLOW_PIPELINE_USER, MlflowServer
from fmnist.stack.postgres import Postgres
from fmnist.stack.proxy import Public
from fmnist.stack.secrets import Secrets
from fmnist.stack.services import base_env, launched, ok, venv_bin
from fmnist.stack.supervisor import Program
from fmnist.stack.users import ServiceUser, owned_dir

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

ENV_FILE = "secrets.env"  # each program's private env file, in a folder of its user


@contextlib.contextmanager
def prefect_client(api_url: str, auth_string: str) -> Iterator[SyncPrefectClient]:
    """Prefect's client for this server, settings passed explicitly: the stack's own process
    has no PREFECT_API_URL or PREFECT_API_AUTH_STRING of its own."""
    from prefect.client.orchestration import SyncPrefectClient

    with SyncPrefectClient(api_url, auth_string=auth_string) as client:
        yield client


class PrefectServer:
    """`prefect server start` on 127.0.0.1:port over PostgreSQL, behind an auth string."""

    name = "prefect-server"

    def __init__(
        self,
        state_dir: Path,
        port: int,
        postgres: Postgres,
        secrets: Secrets,
        public: Public | None = None,
    ):
        self.state_dir = Path(state_dir).resolve()
        self.port = port
        self.postgres = postgres
        self.secrets = secrets
        self.public = public  # the TLS front other machines use (stack/proxy.py), if any
        self.home = self.state_dir / "prefect-server"

    @property
    def url(self) -> str:
        """The dashboard (and the only origin CORS allows)."""
        return f"http://{HOST}:{self.port}"

    @property
    def api_url(self) -> str:
        """What PREFECT_API_URL should be."""
        return f"{self.url}/api"

    address = url

    def program(self, user: ServiceUser | None) -> Program:
        """The supervisord program; its secrets go to a file only its user reads."""
        home = owned_dir(self.home, user, recursive=True)
        # Behind the TLS front, the dashboard calls the API where browsers elsewhere reach it.
        ui_api = f"{self.public.prefect_url}/api" if self.public else self.api_url
        origins = [
            self.url,
            *(self.public.origins(self.public.prefect_port) if self.public else []),
        ]
        env = base_env(home) | {
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_UI_API_URL": ui_api,
            "PREFECT_SERVER_CORS_ALLOWED_ORIGINS": ",".join(origins),
            # The server writes the dashboard's files (its URLs filled in) at start; by default
            # into the venv, which the server user may not write.
            "PREFECT_UI_STATIC_DIRECTORY": str(home / "ui"),
        }
        secrets = {
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": self.postgres.url(
                "prefect", driver="postgresql+asyncpg"
            ),
            "PREFECT_SERVER_API_AUTH_STRING": self.secrets.prefect_auth_string,
            "PREFECT_API_AUTH_STRING": self.secrets.prefect_auth_string,
        }
        argv = [str(venv_bin() / "prefect"), "server", "start", "--host", HOST]
        argv += ["--port", str(self.port)]
        argv = launched(
            argv,
            env_file=home / ENV_FILE,
            secrets=secrets,
            user=user,
            pgid_file=home / "server.pgid",
        )
        return Program(
            self.name, argv, env, user=user and user.name, directory=str(home), umask="077"
        )

    def client(self) -> contextlib.AbstractContextManager[SyncPrefectClient]:
        """An authenticated client of this server."""
        return prefect_client(self.api_url, self.secrets.prefect_auth_string)

    def healthy(self) -> bool:
        """Health answers, and the API lets the auth string in."""
        if not ok(f"{self.api_url}/health"):
            return False
        try:
            with self.client() as client:
                client.api_version()  # /admin/version: 401 without the auth string
        except Exception:  # any error (refused, 401, 5xx) means "not yet"
            return False
        return True


class PrefectWorker:
    """`prefect worker start --pool POOL` in the repository, as the worker user."""

    def __init__(
        self,
        state_dir: Path,
        pool: str,
        prefect: PrefectServer,
        mlflow: MlflowServer,
        *,
        name: str | None = None,
        limit: int | None = None,
        extra_env: dict[str, str] | None = None,
    ):
        self.state_dir = Path(state_dir).resolve()
        self.pool = pool
        self.name = name or f"worker-{pool}"
        self.prefect = prefect
        self.mlflow = mlflow
        self.limit = limit
        self.extra_env = extra_env or {}
        self.started_at = 0.0
        self.home = self.state_dir / "home"

    @property
    def address(self) -> str:
        """For `status`."""
        return f"pool {self.pool}"

    def program(self, user: ServiceUser | None) -> Program:
        """The supervisord program. No KERAS_BACKEND: the profile or the pool decides. Its
        flow runs inherit its environment: the worker's two credentials and nothing else."""
        home = owned_dir(self.home, user, recursive=True)
        env = (
            base_env(home)
            | {
                "PREFECT_HOME": str(owned_dir(home / self.name, user)),
                "PREFECT_API_URL": self.prefect.api_url,
                "MLFLOW_TRACKING_URI": self.mlflow.url,
                "MLFLOW_TRACKING_USERNAME": MLFLOW_PIPELINE_USER,
                "TF_CPP_MIN_LOG_LEVEL": "2",
                # Flow runs inherit it: their heartbeats feed the zombie automation.
                "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_S),
            }
            | self.extra_env
        )
        secrets = self.prefect.secrets
        credentials = {
            "PREFECT_API_AUTH_STRING": secrets.prefect_auth_string,
            "MLFLOW_TRACKING_PASSWORD": secrets.mlflow_pipeline_password,
        }
        argv = [str(venv_bin() / "prefect"), "worker", "start", "--pool", self.pool]
        argv += ["--name", self.name]
        if self.limit is not None:
            argv += ["--limit", str(self.limit)]
        # No --pgid-file: a worker's leftover flow runs are theirs to finish, not to be killed.
        argv = launched(argv, env_file=home / ENV_FILE, secrets=credentials, user=user)
        return Program(self.name, argv, env, user=user and user.name, directory=str(REPO_ROOT))

    def heartbeat(self) -> datetime | None:
        """This worker's last heartbeat as the server saw it, None if it never sent one."""
        try:
            with self.prefect.client() as client:
                workers = client.read_workers_for_work_pool(self.pool)
        except Exception:  # server away, pool not there yet: no heartbeat to show
            return None
        for worker in workers:
            if worker.name == self.name and worker.last_heartbeat_time:
                return worker.last_heartbeat_time
        return None

    def healthy(self) -> bool:
        """A heartbeat since this process started (the server remembers older ones)."""
        beat = self.heartbeat()
        if beat is None:
            return False
        since = self.started_at - 1 if self.started_at else time.time() - 90
        return beat.timestamp() >= since
