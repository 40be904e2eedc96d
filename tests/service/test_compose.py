"""docker/compose.yaml, the container form of the service stack, checked without a Docker
engine: the compose tool resolves the file (`docker compose config`, or docker-compose 1.29
where the v2 plugin is missing), and the Dockerfiles it builds are checked against the tree.

No image is built or run here; these tests use none of the session's servers either.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.service.compose_config import (
    COMPOSE_FILE,
    CORE,
    POOLS,
    PUBLISHED,
    ROOT,
    SECRETS,
    SERVICES,
    built_services,
    command_of,
    environment_of,
    exec_form,
    instructions,
    ports_of,
    resolve,
    run_config,
    volumes_of,
)

pytestmark = pytest.mark.service


def test_compose_config_resolves_the_five_services(resolved: dict[str, Any]) -> None:
    assert set(resolved["services"]) >= SERVICES


def test_gpu_worker_only_with_the_gpu_profile(compose: list[str], resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    assert services["gpu-worker"].get("profiles") == ["gpu"]
    for name in CORE:
        assert not services[name].get("profiles"), f"{name} must start without a profile"
    devices = services["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        d.get("driver") == "nvidia" and "gpu" in (d.get("capabilities") or []) for d in devices
    ), devices
    assert "deploy" not in services["cpu-worker"]
    if compose[:2] == ["docker", "compose"]:
        # v2 leaves out what no active profile enables; v1's `config` lists everything.
        default = resolve(compose)
        assert set(default["services"]) >= CORE
        assert "gpu-worker" not in default["services"]


def test_ports_published_on_loopback_only(resolved: dict[str, Any]) -> None:
    for name, service in resolved["services"].items():
        ports = list(ports_of(service))
        for host_ip, published, target in ports:
            assert host_ip == "127.0.0.1", f"{name} publishes {published}:{target} on {host_ip!r}"
        if name in PUBLISHED:
            assert (PUBLISHED[name], PUBLISHED[name]) in {(p, t) for _, p, t in ports}, ports
        else:
            assert not ports, f"{name} should publish nothing, publishes {ports}"


def test_workers_poll_their_pools_of_the_stack(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    for name, pool in POOLS.items():
        worker = services[name]
        argv = command_of(worker.get("command"))
        assert argv[:3] == ["prefect", "worker", "start"], argv
        assert (
            any(argv[i : i + 2] == ["--pool", pool] for i in range(len(argv) - 1))
            or f"--pool={pool}" in argv
        ), f"{name} does not poll pool {pool}: {argv}"
        env = environment_of(worker)
        assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
        assert env["PREFECT_API_AUTH_STRING"] == SECRETS["PREFECT_AUTH_STRING"]
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        # The `pipeline` user, never the admin (issue 19, item 9).
        assert env["MLFLOW_TRACKING_USERNAME"] == "pipeline"
        assert env["MLFLOW_TRACKING_PASSWORD"] == SECRETS["MLFLOW_PIPELINE_PASSWORD"]
        assert "KERAS_BACKEND" not in env  # the profile or the pool decides
        assert volumes_of(worker).get("/app/data") == "dataset-store"
        depends = worker["depends_on"]
        for server in ("prefect-server", "mlflow"):
            assert depends[server]["condition"] == "service_healthy"
        # Users and names exist before any flow run logs (mlflow-setup).
        assert depends["mlflow-setup"]["condition"] == "service_completed_successfully"
    assert "dataset-store" in resolved["volumes"]


def test_servers_on_postgres(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    prefect_env = environment_of(services["prefect-server"])
    db_url = prefect_env["PREFECT_SERVER_DATABASE_CONNECTION_URL"]
    assert db_url == (
        f"postgresql+asyncpg://prefect:{SECRETS['PREFECT_DB_PASSWORD']}@postgres:5432/prefect"
    )
    assert prefect_env["PREFECT_SERVER_API_AUTH_STRING"] == SECRETS["PREFECT_AUTH_STRING"]
    assert prefect_env["PREFECT_SERVER_CORS_ALLOWED_ORIGINS"] == "http://127.0.0.1:4200"
    assert command_of(services["prefect-server"]["command"])[:3] == ["prefect", "server", "start"]
    mlflow_env = environment_of(services["mlflow"])
    assert mlflow_env["MLFLOW_BACKEND_STORE_URI"] == (
        f"postgresql://mlflow:{SECRETS['MLFLOW_DB_PASSWORD']}@postgres:5432/mlflow"
    )
    assert mlflow_env["MLFLOW_AUTH_ADMIN_PASSWORD"] == SECRETS["MLFLOW_ADMIN_PASSWORD"]
    pg_env = environment_of(services["postgres"])
    assert "scram-sha-256" in pg_env["POSTGRES_INITDB_ARGS"]
    # Without `mlflow` among the allowed hosts, the server answers the workers 403.
    assert "mlflow" in mlflow_env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    for name in ("mlflow", "prefect-server"):
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("postgres", "mlflow", "prefect-server", "cpu-worker", "gpu-worker"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_no_default_passwords(compose: list[str]) -> None:
    """Every secret comes from the environment or docker/.env; without one, compose stops."""
    raw = COMPOSE_FILE.read_text()
    for name in SECRETS:
        assert re.search(r"\$\{" + name + r":-", raw) is None, f"{name} has a default"
        missing = {k: v for k, v in SECRETS.items() if k != name}
        result = run_config(compose, "gpu", secrets=missing)
        assert result.returncode != 0, f"compose config passed without {name}"
        assert name in result.stderr
    assert "fmnist:fmnist" not in raw and "POSTGRES_PASSWORD:-" not in raw


def test_deployments_one_shot_applies_them(resolved: dict[str, Any]) -> None:
    service = resolved["services"]["deployments"]
    assert command_of(service["command"]) == ["python", "-m", "fmnist.stack.deployments", "apply"]
    assert environment_of(service)["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert service["depends_on"]["prefect-server"]["condition"] == "service_healthy"
    assert service.get("restart", "no") == "no"


# -- the Dockerfiles, read from the tree (no compose tool needed) -------------------------


def test_dockerfiles_exist_and_copy_existing_paths() -> None:
    built = built_services()
    assert {"mlflow", "cpu-worker", "gpu-worker"} <= set(built)
    for name, (context, dockerfile) in built.items():
        assert context == ROOT, f"{name} builds from {context}, not the repository root"
        assert dockerfile.is_file(), f"{name}: {dockerfile} is missing"
        for keyword, arguments in instructions(dockerfile):
            if keyword not in ("COPY", "ADD"):
                continue
            args = exec_form(arguments)
            if any(a.startswith("--from") for a in args):
                continue
            sources = [a for a in args if not a.startswith("--")][:-1]
            assert sources, f"{dockerfile.name}: {keyword} {arguments}"
            for source in sources:
                assert (context / source).exists(), f"{dockerfile.name} copies missing {source}"


def test_bind_mounts_exist() -> None:
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    for name, service in raw["services"].items():
        for source in volumes_of(service).values():
            if source.startswith((".", "/")):
                path = (COMPOSE_FILE.parent / source).resolve()
                assert path.exists(), f"{name} mounts missing {path}"


def test_images_start_what_compose_expects() -> None:
    built = built_services()

    def cmd(service: str) -> list[str]:
        commands = [a for k, a in instructions(built[service][1]) if k == "CMD"]
        assert commands, f"{built[service][1].name} has no CMD"
        return exec_form(commands[-1])

    for service, pool in POOLS.items():
        argv = cmd(service)
        assert argv[:3] == ["prefect", "worker", "start"], argv
        assert " ".join(argv).count(f"--pool {pool}") == 1, argv
    server = " ".join(cmd("mlflow"))
    flags = ("mlflow server", "--app-name fmnist-basic-auth", "--backend-store-uri")
    for flag in (*flags, "--serve-artifacts", "--allowed-hosts", "--cors-allowed-origins"):
        assert flag in server, f"mlflow.Dockerfile's CMD lacks {flag}: {server}"
    for service, (_, dockerfile) in built.items():
        env = " ".join(a for k, a in instructions(dockerfile) if k == "ENV")
        assert "KERAS_BACKEND" not in env, f"{service}'s image forces a Keras backend"
    froms = {s: [a for k, a in instructions(d) if k == "FROM"] for s, (_, d) in built.items()}
    assert froms["cpu-worker"] == ["python:3.11-slim-bookworm"]
    assert froms["mlflow"][0].startswith("python:3.11-slim")


def test_v2_long_syntax_is_read_too() -> None:
    """`docker compose config` (v2) prints ports and mounts in the long syntax."""
    v2 = yaml.safe_load(
        """
        ports:
          - {mode: ingress, host_ip: 127.0.0.1, target: 4200, published: "4200", protocol: tcp}
        volumes:
          - {type: volume, source: dataset-store, target: /app/data, volume: {}}
          - {type: bind, source: /repo/docker/postgres-init, target: /init, read_only: true}
        """
    )
    assert list(ports_of(v2)) == [("127.0.0.1", 4200, 4200)]
    assert volumes_of(v2) == {"/app/data": "dataset-store", "/init": "/repo/docker/postgres-init"}
    v1 = {"ports": ["127.0.0.1:5000:5000/tcp", "8080:80"], "volumes": ["pgdata:/var/lib:rw"]}
    assert list(ports_of(v1)) == [("127.0.0.1", 5000, 5000), ("", 8080, 80)]
    assert volumes_of(v1) == {"/var/lib": "pgdata"}
