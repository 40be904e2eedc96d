"""MLflow's users and the names the pipeline uses, made at `stack-up` through MLflow's own
clients (AuthServiceClient, MlflowClient).

    python -m fmnist.stack.mlflow_setup      (docker/compose.yaml's one-shot `mlflow-setup`)

Users: `pipeline` (what workers and flow runs log as) and `viewer` (read-only), with the
secrets' passwords. Names: every experiment and registered model a profile names (conf/),
created by `pipeline`, which thereby MANAGEs them, and granted READ to `viewer`.

Why create them up front: MLflow's basic-auth app lets any user create experiments and
registered models (only its workspaces mode can refuse that, and it sends the UI's deep
links to a workspace picker). A viewer who created the pipeline's experiment or registered
model before the first run would own it: the pipeline would get 403 on its runs, versions
and aliases, and the viewer would hold the `@champion` alias `fmnist predict` loads. With the
names taken by `pipeline` first, the viewer can still create names of its own, never these;
a name it took on an older stack is handed back (`pipeline` MANAGE, `viewer` READ).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

from fmnist.stack import StackError
from fmnist.stack.mlflow_server import (
    MLFLOW_ADMIN,
    MLFLOW_PIPELINE_USER,
    MLFLOW_VIEWER,
    mlflow_login,
)


def _missing(exc: Exception) -> bool:
    return getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


def ensure_users(url: str, admin_password: str, passwords: dict[str, str]) -> None:
    """Each user created, or its password brought in line with the secrets."""
    from mlflow.exceptions import RestException
    from mlflow.server.auth.client import AuthServiceClient

    with mlflow_login(MLFLOW_ADMIN, admin_password):
        client = AuthServiceClient(url)
        for user, password in passwords.items():
            try:
                client.get_user(user)
            except RestException as exc:
                if not _missing(exc):
                    raise StackError(f"MLflow: could not look up user {user!r}: {exc}") from None
                client.create_user(user, password)
            else:
                client.update_user_password(user, password)


def pipeline_names() -> tuple[set[str], set[str]]:
    """(experiments, registered models) the shipped profiles name."""
    from fmnist.conf import available_profiles, load_config

    configs = [load_config(profile) for profile in available_profiles()]
    experiments = {cfg.tracking.experiment for cfg in configs}
    models = {cfg.tracking.registered_model for cfg in configs if cfg.tracking.registered_model}
    return experiments, models


def ensure_names(
    url: str,
    admin_password: str,
    pipeline_password: str,
    experiments: Iterable[str],
    models: Iterable[str],
) -> None:
    """Each name created by `pipeline` unless it exists; then `pipeline` MANAGE and `viewer`
    READ on it, whoever created it."""
    from mlflow.exceptions import RestException
    from mlflow.server.auth.client import AuthServiceClient
    from mlflow.tracking import MlflowClient

    experiments, models = sorted(set(experiments)), sorted(set(models))
    ids = {}
    with mlflow_login(MLFLOW_PIPELINE_USER, pipeline_password):
        client = MlflowClient(tracking_uri=url)
        for name in experiments:
            found = client.get_experiment_by_name(name)
            ids[name] = found.experiment_id if found else client.create_experiment(name)
        for name in models:
            try:
                client.get_registered_model(name)
            except RestException as exc:
                if not _missing(exc):
                    raise
                client.create_registered_model(name)
    with mlflow_login(MLFLOW_ADMIN, admin_password):
        auth = AuthServiceClient(url)
        grants = [("experiment", ids[name]) for name in experiments]
        grants += [("registered_model", name) for name in models]
        for resource_type, resource_id in grants:
            set_permission(auth, MLFLOW_PIPELINE_USER, resource_type, resource_id, "MANAGE")
            set_permission(auth, MLFLOW_VIEWER, resource_type, resource_id, "READ")


def set_permission(auth: Any, user: str, resource_type: str, resource_id: str, level: str) -> None:
    """user's permission on the resource is level afterwards, whatever grant it had."""
    from mlflow.exceptions import RestException

    if auth.get_user_permission(user, resource_type, resource_id).permission == level:
        return
    try:  # the server grants only where there is no grant yet: remove the one there is
        auth.revoke_user_permission(user, resource_type, resource_id)
    except RestException as exc:
        if not _missing(exc):
            raise
    auth.grant_user_permission(user, resource_type, resource_id, level)


def setup(url: str, admin: str, pipeline: str, viewer: str) -> None:
    """Users, then names (stack-up and compose's one-shot service)."""
    ensure_users(url, admin, {MLFLOW_PIPELINE_USER: pipeline, MLFLOW_VIEWER: viewer})
    experiments, models = pipeline_names()
    ensure_names(url, admin, pipeline, experiments, models)


def main() -> int:
    """`python -m fmnist.stack.mlflow_setup`: MLFLOW_TRACKING_URI and the three passwords
    (FMNIST_MLFLOW_ADMIN_PASSWORD, _PIPELINE_PASSWORD, _VIEWER_PASSWORD) from the environment."""
    names = ["MLFLOW_TRACKING_URI"]
    names += [f"FMNIST_MLFLOW_{who}_PASSWORD" for who in ("ADMIN", "PIPELINE", "VIEWER")]
    if missing := [name for name in names if not os.environ.get(name)]:
        print(f"mlflow_setup: set {', '.join(missing)}", file=sys.stderr)
        return 2
    url, admin, pipeline, viewer = (os.environ[name] for name in names)
    setup(url, admin, pipeline, viewer)
    print(f"MLflow users {MLFLOW_PIPELINE_USER} and {MLFLOW_VIEWER} and the pipeline's names ready")
    return 0


if __name__ == "__main__":
    sys.exit(main())
