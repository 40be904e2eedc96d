"""A worker on another machine: its own MLflow user, and the one file it needs.

    python -m fmnist.stack worker-settings --name box1 [--pool gpu] [--experiment NAME] > box1.sh

(on the stack's machine, as root) creates MLflow user `worker-box1` (or gives it a new
password), allowed to write runs in the pipeline's experiments and nothing else (no registry
writes, no user admin), and prints a POSIX shell script: the servers' public URLs, the CA
they are verified with, the Prefect auth string and that user's password, and the command.
On the GPU machine, with the lock installed (pip install -r requirements.lock) and that
environment's python first on PATH (or PYTHON=...):

    sh box1.sh

starts `prefect worker start --pool gpu --name box1`. Nothing of ours is installed there: each
flow run clones the code at its deployment's commit (prefect.yaml's pull step).
"""

from __future__ import annotations

import os
import secrets as random_source
import shlex
import stat
from collections.abc import Iterable
from datetime import UTC, datetime

from fmnist.stack import StackError
from fmnist.stack.core import Stack
from fmnist.stack.mlflow_server import MLFLOW_ADMIN, mlflow_login
from fmnist.stack.mlflow_setup import ensure_names, pipeline_names, set_permission
from fmnist.stack.proxy import PREFECT_TLS_ENV

USER_PREFIX = "worker-"
WORKER_PERMISSION = "EDIT"  # runs, metrics, artifacts, models in the experiment; no grants


def ensure_worker_user(stack: Stack, name: str, experiments: Iterable[str]) -> str:
    """MLflow user worker-<name> with a new password and EDIT on the experiments (created
    by `pipeline` first if missing, as stack-up does); return the password."""
    from mlflow.exceptions import RestException
    from mlflow.server.auth.client import AuthServiceClient
    from mlflow.tracking import MlflowClient

    url, secrets = stack.mlflow.url, stack.secrets
    user, password = USER_PREFIX + name, random_source.token_urlsafe(24)
    experiments = sorted(set(experiments))
    ensure_names(
        url,
        secrets.mlflow_admin_password,
        secrets.mlflow_pipeline_password,
        experiments,
        [],
    )
    with mlflow_login(MLFLOW_ADMIN, secrets.mlflow_admin_password):
        auth = AuthServiceClient(url)
        try:
            auth.get_user(user)
        except RestException:
            auth.create_user(user, password)
        else:
            auth.update_user_password(user, password)
        client = MlflowClient(tracking_uri=url)
        for experiment in experiments:
            exp_id = client.get_experiment_by_name(experiment).experiment_id
            set_permission(auth, user, "experiment", exp_id, WORKER_PERMISSION)
    return password


def _quote(value: str) -> str:
    return shlex.quote(value)


def worker_script(stack: Stack, name: str, pool: str, password: str) -> str:
    """The worker's one file: settings, CA and credentials, then the command."""
    public, proxy = stack.public, stack.proxy
    if public is None or proxy is None:
        raise StackError(
            "this stack listens on 127.0.0.1 only: start it with FMNIST_PUBLIC_ADDRESS=<an "
            f"address of this machine> (TLS on {PREFECT_TLS_ENV} and FMNIST_MLFLOW_TLS_PORT) so "
            "that other machines can reach it (docs/remote.md)"
        )
    ca = proxy.ca_file.read_text().strip()
    settings = {
        "PREFECT_API_URL": f"{public.prefect_url}/api",
        "PREFECT_API_AUTH_STRING": stack.secrets.prefect_auth_string,
        "MLFLOW_TRACKING_URI": public.mlflow_url,
        "MLFLOW_TRACKING_USERNAME": USER_PREFIX + name,
        "MLFLOW_TRACKING_PASSWORD": password,
    }
    exports = "\n".join(f"export {key}={_quote(value)}" for key, value in settings.items())
    made = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""#!/bin/sh
# fmnist worker {name!r} on pool {pool!r} of the stack at {public.prefect_url}; made {made}
# by `python -m fmnist.stack worker-settings`. It holds this worker's credentials: keep it
# mode 0600 and copy it only to that machine. Run: sh {name}.sh (docs/remote.md)
set -eu
umask 077
{exports}
# Everything of this worker lives here; flow runs clone the code into temporary folders.
home="${{FMNIST_WORKER_HOME:-${{HOME:-/tmp}}/.fmnist-worker/{name}}}"
mkdir -p "$home"
cat > "$home/ca.pem" <<'FMNIST_CA'
{ca}
FMNIST_CA
# Our servers are verified with the stack's own CA, and only with it; never unverified.
export PREFECT_API_SSL_CERT_FILE="$home/ca.pem" MLFLOW_TRACKING_SERVER_CERT_PATH="$home/ca.pem"
export PREFECT_HOME="$home/prefect" FMNIST_DATASET_CACHE="$home/datasets"
export PREFECT_FLOWS_HEARTBEAT_FREQUENCY=30 PREFECT_CLI_PROMPT=false TF_CPP_MIN_LOG_LEVEL=2
export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true
# A git server that is away fails a clone within a bound instead of hanging on a prompt.
export GIT_TERMINAL_PROMPT=0 GIT_HTTP_LOW_SPEED_LIMIT=1000 GIT_HTTP_LOW_SPEED_TIME=60
cd "$home"
exec "${{PYTHON:-python3}}" -m prefect worker start --pool {_quote(pool)} --name {_quote(name)} "$@"
"""


def keep_private(fd: int) -> bool:
    """Make the regular file open on fd readable by its owner only (0600); True if it was one.

    `worker-settings > box1.sh`: the shell creates box1.sh with its umask (0644 as a rule)
    before we run; the file holds the worker's credentials."""
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        return False
    os.fchmod(fd, 0o600)
    return True


def worker_settings(
    stack: Stack, name: str, pool: str = "gpu", experiments: Iterable[str] = ()
) -> str:
    """Make (or renew) the worker's MLflow user; return its script."""
    if not name.replace("-", "").replace("_", "").isalnum():
        raise StackError(f"worker name {name!r}: letters, digits, - and _ only")
    if not stack.supervisor.running():
        raise StackError(f"the stack in {stack.state_dir} is not running: make stack-up first")
    worker_script(stack, name, pool, "")  # a stack others cannot reach: refused before any user
    names, _ = pipeline_names()
    password = ensure_worker_user(stack, name, [*names, *experiments])
    return worker_script(stack, name, pool, password)
