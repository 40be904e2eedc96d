"""The MLflow tracking server: `mlflow server --app-name basic-auth` on 127.0.0.1:port, runs
and models in PostgreSQL, artifacts served through the server (mlflow-artifacts:/), users in
its auth database; its supervisord program and readiness.

It runs as the server user, whose folder (0700) holds the auth database, the artifact store
and the file with its secrets (backend store URL, admin password, Flask key). CORS admits the
UI's own origin only (MLflow's default is any localhost port).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

from fmnist.stack import HOST, StackError
from fmnist.stack.postgres import Postgres
from fmnist.stack.proxy import Public
from fmnist.stack.secrets import Secrets
from fmnist.stack.services import base_env, launched, ok, venv_bin
from fmnist.stack.supervisor import Program
from fmnist.stack.users import ServiceUser, owned_dir

MLFLOW_ADMIN = "admin"
MLFLOW_PIPELINE_USER = "pipeline"  # pipeline and workers log as this user
MLFLOW_VIEWER = "viewer"  # read-only: people who only look at the UI
ENV_FILE = "secrets.env"
APP = "fmnist-basic-auth"  # stack/mlflow_app.py, an `mlflow.app` entry point (pyproject.toml)


@contextlib.contextmanager
def mlflow_login(username: str, password: str) -> Iterator[None]:
    """MLflow's clients (MlflowClient, AuthServiceClient) log in as this user meanwhile: they
    read their credentials from the environment only, so it is set, then restored."""
    names = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(zip(names, (username, password), strict=True))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class MlflowServer:
    """The MLflow server of one state folder."""

    name = "mlflow-server"

    def __init__(
        self,
        state_dir: Path,
        port: int,
        postgres: Postgres,
        secrets: Secrets,
        workers: int = 2,
        public: Public | None = None,
    ):
        self.public = public  # the TLS front other machines use (stack/proxy.py), if any
        self.state_dir = Path(state_dir).resolve()
        self.port = port
        self.postgres = postgres
        self.secrets = secrets
        self.workers = workers
        self.home = self.state_dir / "mlflow"
        self.artifacts_dir = self.home / "artifacts"
        self.auth_config = self.home / "basic_auth.ini"
        self.auth_db = self.home / "basic_auth.db"

    @property
    def url(self) -> str:
        """The tracking URI and UI."""
        return f"http://{HOST}:{self.port}"

    address = url

    @property
    def origins(self) -> list[str]:
        """The browser origins admitted: the UI's own under both loopback names, the TLS
        front's, and those FMNIST_MLFLOW_ORIGINS adds (comma-separated: a tunnel's address)."""
        extra = os.environ.get("FMNIST_MLFLOW_ORIGINS", "")
        front = self.public.origins(self.public.mlflow_port) if self.public else []
        return [self.url, f"http://localhost:{self.port}", *front] + [
            o.strip() for o in extra.split(",") if o.strip()
        ]

    def program(self, user: ServiceUser | None) -> Program:
        """The supervisord program, its auth config and its private env file."""
        if not entry_points(group="mlflow.app", name=APP):
            raise StackError(
                f"MLflow app {APP!r} is not installed (an install older than pyproject.toml): "
                "make .venv/.installed, or pip install -e ."
            )
        owned_dir(self.home, user, recursive=True)
        owned_dir(self.artifacts_dir, user)
        # No password in this file: the admin's first password comes from the env file
        # (MLFLOW_AUTH_ADMIN_PASSWORD), read only while the admin does not exist yet.
        self.auth_config.write_text(
            "[mlflow]\n"
            "default_permission = READ\n"
            f"database_uri = sqlite:///{self.auth_db}\n"
            f"admin_username = {MLFLOW_ADMIN}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        )
        env = base_env(self.home) | {
            "MLFLOW_AUTH_CONFIG_PATH": str(self.auth_config),
            # MLflow's job runner (GenAI evaluation, prompt optimisation) is seven more Python
            # processes and a /dev/shm folder it never removes; this pipeline uses none of it.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
        secrets = {
            "MLFLOW_BACKEND_STORE_URI": self.postgres.url("mlflow", driver="postgresql+psycopg2"),
            "MLFLOW_AUTH_ADMIN_PASSWORD": self.secrets.mlflow_admin_password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": self.secrets.mlflow_flask_secret,
        }
        argv = [
            str(venv_bin() / "mlflow"),
            "server",
            "--app-name",
            APP,  # MLflow's basic-auth app, browser origins held to `origins`
            "--serve-artifacts",
            "--artifacts-destination",
            str(self.artifacts_dir),
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--cors-allowed-origins",
            ",".join(self.origins),
        ]
        argv = launched(
            argv,
            env_file=self.home / ENV_FILE,
            secrets=secrets,
            user=user,
            pgid_file=self.home / "server.pgid",
        )
        return Program(
            self.name, argv, env, user=user and user.name, directory=str(self.home), umask="077"
        )

    def admin(self) -> contextlib.AbstractContextManager[None]:
        """MLflow's clients log in as the admin meanwhile."""
        return mlflow_login(MLFLOW_ADMIN, self.secrets.mlflow_admin_password)

    def healthy(self) -> bool:
        """/health answers and the admin can log in."""
        from mlflow.server.auth.client import AuthServiceClient

        if not ok(f"{self.url}/health"):
            return False
        try:
            with self.admin():
                AuthServiceClient(self.url).get_user(MLFLOW_ADMIN)
        except Exception:  # refused, 401, 5xx: not ready yet
            return False
        return True
