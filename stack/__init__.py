"""The native service stack: PostgreSQL, Prefect server, MLflow server and workers, run by
supervisord; no Docker.

    python -m fmnist.stack up | down | status          (make stack-up | stack-down | stack-status)
    python -m fmnist.stack.deployments apply [--profile P]

Supervision (start, stop as a process group, restart with backoff, logs per program) is
supervisord's (stack/supervisor.py renders its config per state folder). This package keeps
only what the project alone knows: who runs what (stack/users.py: servers and flow runs under
different users), initdb, roles and databases (stack/postgres.py), secrets (stack/secrets.py,
each program's own in a private file: stack/launch.py), the servers' authentication and
readiness (stack/prefect_services.py, stack/mlflow_server.py, stack/mlflow_app.py), MLflow's
users and the pipeline's names (stack/mlflow_setup.py), the work pools (stack/pools.py, the
one place that creates them) and the deployments. docs/threat-model.md: who holds what.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
POOLS = ("cpu", "gpu")
# Generous: on a 2-core machine busy with something else, Prefect's and MLflow's first start
# (imports plus database migrations) takes well over a minute.
START_TIMEOUT = float(os.environ.get("FMNIST_STACK_TIMEOUT", "240"))
STOP_TIMEOUT = 30.0


class StackError(RuntimeError):
    """A service could not be started or stopped; the message says why and names its log."""
