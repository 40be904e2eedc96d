"""docker/compose.yaml gives its services the native stack's users and rights (issue 19,
item 9): workers log in to MLflow as `pipeline`, never the admin, and hold no server secret;
the one-shot `mlflow-setup` makes users and names before any worker starts; MLflow admits its
own browser origin only; servers and workers run as different uids, none as root.

Checked on the resolved configuration and the Dockerfiles, without a Docker engine.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.service.compose_config import (
    ROOT,
    SECRETS,
    SERVER_SECRETS,
    built_services,
    command_of,
    environment_of,
    instructions,
)

pytestmark = pytest.mark.service


def test_only_the_servers_hold_the_server_secrets(resolved: dict[str, Any]) -> None:
    """Workers and the deployments one-shot: the Prefect auth string and the `pipeline`
    password only; MLflow's admin password reaches mlflow and mlflow-setup alone."""
    holders: dict[str, set[str]] = {}
    for name, service in resolved["services"].items():
        values = " ".join(environment_of(service).values())
        for secret, value in SERVER_SECRETS.items():
            if value in values:
                holders.setdefault(secret, set()).add(name)
    assert holders["MLFLOW_ADMIN_PASSWORD"] == {"mlflow", "mlflow-setup"}
    assert holders["MLFLOW_FLASK_SECRET_KEY"] == {"mlflow"}
    assert holders["MLFLOW_DB_PASSWORD"] == {"postgres", "mlflow"}
    assert holders["PREFECT_DB_PASSWORD"] == {"postgres", "prefect-server"}
    assert holders["POSTGRES_PASSWORD"] == {"postgres"}
    assert holders["MLFLOW_VIEWER_PASSWORD"] == {"mlflow-setup"}
    for name in ("cpu-worker", "gpu-worker", "deployments"):
        assert not [s for s, who in holders.items() if name in who], name


def test_mlflow_setup_makes_users_and_names_first(resolved: dict[str, Any]) -> None:
    service = resolved["services"]["mlflow-setup"]
    assert command_of(service["command"]) == ["python", "-m", "fmnist.stack.mlflow_setup"]
    env = environment_of(service)
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["FMNIST_MLFLOW_ADMIN_PASSWORD"] == SECRETS["MLFLOW_ADMIN_PASSWORD"]
    assert env["FMNIST_MLFLOW_PIPELINE_PASSWORD"] == SECRETS["MLFLOW_PIPELINE_PASSWORD"]
    assert env["FMNIST_MLFLOW_VIEWER_PASSWORD"] == SECRETS["MLFLOW_VIEWER_PASSWORD"]
    assert service["depends_on"]["mlflow"]["condition"] == "service_healthy"
    assert service.get("restart", "no") == "no"


def test_mlflow_admits_only_its_own_browser_origin(resolved: dict[str, Any]) -> None:
    env = environment_of(resolved["services"]["mlflow"])
    origins = env["MLFLOW_SERVER_CORS_ALLOWED_ORIGINS"].split(",")
    assert origins == ["http://127.0.0.1:5000", "http://localhost:5000"]
    image = (ROOT / "docker" / "mlflow.Dockerfile").read_text()
    # The app that holds MLflow to that list is installed in the image.
    assert "COPY stack/mlflow_app.py" in image
    assert 'fmnist-basic-auth = "fmnist_mlflow_app:create_app"' in image


def test_servers_and_workers_run_as_different_users(resolved: dict[str, Any]) -> None:
    built = built_services()

    def image_user(service: str) -> str:
        users = [a for k, a in instructions(built[service][1]) if k == "USER"]
        assert users, f"{built[service][1].name} runs as root"
        uids = re.findall(r"--uid (\d+) " + re.escape(users[-1]), built[service][1].read_text())
        assert uids, f"{built[service][1].name}: no uid for user {users[-1]}"
        return uids[0]

    prefect = str(resolved["services"]["prefect-server"].get("user", "")).split(":")[0]
    assert prefect and prefect != "0", "prefect-server runs as the image's root"
    uids = {
        "mlflow": image_user("mlflow"),
        "prefect-server": prefect,
        "worker": image_user("cpu-worker"),
    }
    assert image_user("gpu-worker") == uids["worker"]  # they share the dataset store
    assert len(set(uids.values())) == 3, uids
