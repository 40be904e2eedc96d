"""The stack's serving service: `fmnist serve` (flows/serve.py) on 127.0.0.1, supervised and
authenticated like the other servers, serving `@champion` and following it after each
promotion (a new version is started, checked, then switched to; the old one stays on any
failure).

It runs as the server user (flow runs, under the worker user, cannot read its environment),
reads the registry as MLflow's read-only `viewer`, and asks its clients for basic auth:
user `serving`, password FMNIST_SERVING_PASSWORD of the stack's secrets.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from fmnist.conf import DEFAULT_PROFILE
from fmnist.stack import HOST
from fmnist.stack.mlflow_server import ENV_FILE, MLFLOW_VIEWER, MlflowServer
from fmnist.stack.secrets import Secrets
from fmnist.stack.services import base_env, launched, venv_bin
from fmnist.stack.supervisor import Program
from fmnist.stack.users import ServiceUser, owned_dir

SERVING_USER = "serving"  # the name clients send with FMNIST_SERVING_PASSWORD
# The front drains requests for up to serving.drain_timeout_s (60 s) before it stops.
STOP_WAIT_S = 75


class ServingService:
    """`python -m fmnist.flows.serve --wait` for the champion of the stack's MLflow server."""

    name = "serving"

    def __init__(self, state_dir: Path, port: int, mlflow: MlflowServer, secrets: Secrets):
        self.state_dir = Path(state_dir).resolve()
        self.port = port
        self.mlflow = mlflow
        self.secrets = secrets
        self.home = self.state_dir / "serving"

    @property
    def url(self) -> str:
        """Where clients send their images."""
        return f"http://{HOST}:{self.port}"

    address = url

    @property
    def credentials(self) -> str:
        """user:password clients send (basic auth)."""
        return f"{SERVING_USER}:{self.secrets.serving_password}"

    def program(self, user: ServiceUser | None) -> Program:
        """The supervisord program: the front and its scoring servers, one process group."""
        home = owned_dir(self.home, user, recursive=True)
        env = base_env(home) | {
            "MLFLOW_TRACKING_URI": self.mlflow.url,
            "MLFLOW_TRACKING_USERNAME": MLFLOW_VIEWER,
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
        secrets = {
            "MLFLOW_TRACKING_PASSWORD": self.secrets.mlflow_viewer_password,
            "FMNIST_SERVING_AUTH": self.credentials,
        }
        argv = [str(venv_bin() / "python"), "-m", "fmnist.flows.serve", "--wait"]
        argv += ["--profile", DEFAULT_PROFILE, "--host", HOST, "--port", str(self.port)]
        argv = launched(
            argv,
            env_file=home / ENV_FILE,
            secrets=secrets,
            user=user,
            pgid_file=home / "serving.pgid",
        )
        return Program(
            self.name,
            argv,
            env,
            user=user and user.name,
            directory=str(home),
            stopwaitsecs=STOP_WAIT_S,
            umask="077",
        )

    def healthy(self) -> bool:
        """The front answers /ping: 200 when it serves a version, 503 while it waits for the
        first champion (both mean the service is up)."""
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=10) as response:
                return response.status == 200
        except urllib.error.HTTPError as exc:
            return exc.code == 503
        except OSError:
            return False
