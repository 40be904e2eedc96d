"""docker/compose.yaml, the container form of the service stack, checked without a Docker
engine: the compose tool resolves the file (`docker compose config`, or docker-compose 1.29
where the v2 plugin is missing), and the Dockerfiles it builds are checked against the tree.

No image is built or run here; these tests use none of the session's servers either.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.skips import missing

pytestmark = pytest.mark.service

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker" / "compose.yaml"
CORE = {"postgres", "mlflow", "prefect-server", "cpu-worker"}
SERVICES = {*CORE, "gpu-worker"}
POOLS = {"cpu-worker": "cpu", "gpu-worker": "gpu"}
PUBLISHED = {"mlflow": 5000, "prefect-server": 4200}


def _compose_command() -> list[str] | None:
    """`docker compose` (v2 plugin) if it answers, else `docker-compose` (v1), else None."""
    if shutil.which("docker"):
        probe = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, text=True, timeout=60
        )
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


@pytest.fixture(scope="module")
def compose() -> list[str]:
    command = _compose_command()
    if command is None:
        pytest.skip(
            missing(
                "neither `docker compose` (v2 plugin) nor `docker-compose`",
                "apt-get install docker-compose",
            )
        )
    return command


# What docker/.env provides (docker/env.example lists them); dummies here.
SECRETS = {
    "POSTGRES_PASSWORD": "pg-superuser-secret-1",
    "PREFECT_DB_PASSWORD": "pg-prefect-secret-22",
    "MLFLOW_DB_PASSWORD": "pg-mlflow-secret-333",
    "PREFECT_AUTH_STRING": "fmnist:prefect-secret-4444",
    "MLFLOW_ADMIN_PASSWORD": "mlflow-admin-secret-5",
    "MLFLOW_FLASK_SECRET_KEY": "mlflow-flask-secret-66",
    "MLFLOW_PIPELINE_PASSWORD": "mlflow-pipeline-secret-7",
    "MLFLOW_VIEWER_PASSWORD": "mlflow-viewer-secret-88",
}
# What only the servers (and mlflow-setup, for the admin password) may hold.
SERVER_SECRETS = {
    k: v for k, v in SECRETS.items() if k not in ("PREFECT_AUTH_STRING", "MLFLOW_PIPELINE_PASSWORD")
}


def _run_config(
    compose: list[str], *profiles: str, secrets: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    flags = [arg for p in profiles for arg in ("--profile", p)]
    # Interpolation defaults only: no override from this machine's environment.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("POSTGRES_", "PREFECT_", "MLFLOW_", "FMNIST_", "KERAS_"))
    }
    env.pop("COMPOSE_PROFILES", None)
    env.pop("COMPOSE_FILE", None)
    env |= secrets
    # --project-directory elsewhere: a docker/.env on this machine must not fill them in.
    return subprocess.run(
        [*compose, "-f", str(COMPOSE_FILE), "--project-directory", str(ROOT), *flags, "config"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _config(compose: list[str], *profiles: str) -> dict[str, Any]:
    """The resolved configuration, as the compose tool prints it."""
    result = _run_config(compose, *profiles, secrets=SECRETS)
    assert result.returncode == 0, f"{' '.join(compose)} config failed:\n{result.stderr}"
    config = yaml.safe_load(result.stdout)
    assert isinstance(config, dict) and "services" in config, result.stdout
    return config


@pytest.fixture(scope="module")
def resolved(compose: list[str]) -> dict[str, Any]:
    """Every service, the `gpu` profile's included."""
    return _config(compose, "gpu")


def _argv(command: str | list[str] | None) -> list[str]:
    if command is None:
        return []
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # ["KEY=value", ...]
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _ports(service: dict[str, Any]) -> Iterator[tuple[str, int, int]]:
    """(host_ip, published, target) of each port, from v2's long or v1's short syntax."""
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            yield str(port.get("host_ip", "")), int(port["published"]), int(port["target"])
            continue
        spec = str(port).split("/", 1)[0]  # "127.0.0.1:5000:5000/tcp"
        parts = spec.rsplit(":", 2)
        if len(parts) == 3:
            yield parts[0].strip("[]"), int(parts[1]), int(parts[2])
        elif len(parts) == 2:
            yield "", int(parts[0]), int(parts[1])
        else:
            yield "", 0, int(parts[0])


def _volumes(service: dict[str, Any]) -> dict[str, str]:
    """target -> source of each mount, from v2's long or v1's short syntax."""
    mounts = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            mounts[volume["target"]] = str(volume.get("source", ""))
        else:
            source, target, *_ = str(volume).split(":")
            mounts[target] = source
    return mounts


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
        default = _config(compose)
        assert set(default["services"]) >= CORE
        assert "gpu-worker" not in default["services"]


def test_ports_published_on_loopback_only(resolved: dict[str, Any]) -> None:
    for name, service in resolved["services"].items():
        ports = list(_ports(service))
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
        argv = _argv(worker.get("command"))
        assert argv[:3] == ["prefect", "worker", "start"], argv
        assert (
            any(argv[i : i + 2] == ["--pool", pool] for i in range(len(argv) - 1))
            or f"--pool={pool}" in argv
        ), f"{name} does not poll pool {pool}: {argv}"
        env = _environment(worker)
        assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
        assert env["PREFECT_API_AUTH_STRING"] == SECRETS["PREFECT_AUTH_STRING"]
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        # The `pipeline` user, never the admin (issue 19, item 9).
        assert env["MLFLOW_TRACKING_USERNAME"] == "pipeline"
        assert env["MLFLOW_TRACKING_PASSWORD"] == SECRETS["MLFLOW_PIPELINE_PASSWORD"]
        assert "KERAS_BACKEND" not in env  # the profile or the pool decides
        assert _volumes(worker).get("/app/data") == "dataset-store"
        depends = worker["depends_on"]
        for server in ("prefect-server", "mlflow"):
            assert depends[server]["condition"] == "service_healthy"
        # Users and names exist before any flow run logs (mlflow-setup).
        assert depends["mlflow-setup"]["condition"] == "service_completed_successfully"
    assert "dataset-store" in resolved["volumes"]


def test_servers_on_postgres(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    prefect_env = _environment(services["prefect-server"])
    db_url = prefect_env["PREFECT_SERVER_DATABASE_CONNECTION_URL"]
    assert db_url == (
        f"postgresql+asyncpg://prefect:{SECRETS['PREFECT_DB_PASSWORD']}@postgres:5432/prefect"
    )
    assert prefect_env["PREFECT_SERVER_API_AUTH_STRING"] == SECRETS["PREFECT_AUTH_STRING"]
    assert prefect_env["PREFECT_SERVER_CORS_ALLOWED_ORIGINS"] == "http://127.0.0.1:4200"
    assert _argv(services["prefect-server"]["command"])[:3] == ["prefect", "server", "start"]
    mlflow_env = _environment(services["mlflow"])
    assert mlflow_env["MLFLOW_BACKEND_STORE_URI"] == (
        f"postgresql://mlflow:{SECRETS['MLFLOW_DB_PASSWORD']}@postgres:5432/mlflow"
    )
    assert mlflow_env["MLFLOW_AUTH_ADMIN_PASSWORD"] == SECRETS["MLFLOW_ADMIN_PASSWORD"]
    pg_env = _environment(services["postgres"])
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
        result = _run_config(compose, "gpu", secrets=missing)
        assert result.returncode != 0, f"compose config passed without {name}"
        assert name in result.stderr
    assert "fmnist:fmnist" not in raw and "POSTGRES_PASSWORD:-" not in raw


def test_deployments_one_shot_applies_them(resolved: dict[str, Any]) -> None:
    service = resolved["services"]["deployments"]
    assert _argv(service["command"]) == ["python", "-m", "fmnist.stack.deployments", "apply"]
    assert _environment(service)["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert service["depends_on"]["prefect-server"]["condition"] == "service_healthy"
    assert service.get("restart", "no") == "no"


# -- the Dockerfiles, read from the tree (no compose tool needed) -------------------------


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines = [
        line for line in dockerfile.read_text().splitlines() if not line.lstrip().startswith("#")
    ]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    pairs = []
    for line in text.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def _exec_form(arguments: str) -> list[str]:
    return json.loads(arguments) if arguments.startswith("[") else shlex.split(arguments)


def _built_services() -> dict[str, tuple[Path, Path]]:
    """service -> (build context, Dockerfile), read from compose.yaml itself."""
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    built = {}
    for name, service in raw["services"].items():
        build = service.get("build")
        if build is None:
            continue
        if isinstance(build, str):
            build = {"context": build}
        context = (COMPOSE_FILE.parent / build.get("context", ".")).resolve()
        built[name] = (context, context / build.get("dockerfile", "Dockerfile"))
    return built


def test_dockerfiles_exist_and_copy_existing_paths() -> None:
    built = _built_services()
    assert {"mlflow", "cpu-worker", "gpu-worker"} <= set(built)
    for name, (context, dockerfile) in built.items():
        assert context == ROOT, f"{name} builds from {context}, not the repository root"
        assert dockerfile.is_file(), f"{name}: {dockerfile} is missing"
        for keyword, arguments in _instructions(dockerfile):
            if keyword not in ("COPY", "ADD"):
                continue
            args = _exec_form(arguments)
            if any(a.startswith("--from") for a in args):
                continue
            sources = [a for a in args if not a.startswith("--")][:-1]
            assert sources, f"{dockerfile.name}: {keyword} {arguments}"
            for source in sources:
                assert (context / source).exists(), f"{dockerfile.name} copies missing {source}"


def test_bind_mounts_exist() -> None:
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    for name, service in raw["services"].items():
        for source in _volumes(service).values():
            if source.startswith((".", "/")):
                path = (COMPOSE_FILE.parent / source).resolve()
                assert path.exists(), f"{name} mounts missing {path}"


def test_images_start_what_compose_expects() -> None:
    built = _built_services()

    def cmd(service: str) -> list[str]:
        commands = [a for k, a in _instructions(built[service][1]) if k == "CMD"]
        assert commands, f"{built[service][1].name} has no CMD"
        return _exec_form(commands[-1])

    for service, pool in POOLS.items():
        argv = cmd(service)
        assert argv[:3] == ["prefect", "worker", "start"], argv
        assert " ".join(argv).count(f"--pool {pool}") == 1, argv
    server = " ".join(cmd("mlflow"))
    flags = ("mlflow server", "--app-name fmnist-basic-auth", "--backend-store-uri")
    for flag in (*flags, "--serve-artifacts", "--allowed-hosts", "--cors-allowed-origins"):
        assert flag in server, f"mlflow.Dockerfile's CMD lacks {flag}: {server}"
    for service, (_, dockerfile) in built.items():
        env = " ".join(a for k, a in _instructions(dockerfile) if k == "ENV")
        assert "KERAS_BACKEND" not in env, f"{service}'s image forces a Keras backend"
    froms = {s: [a for k, a in _instructions(d) if k == "FROM"] for s, (_, d) in built.items()}
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
    assert list(_ports(v2)) == [("127.0.0.1", 4200, 4200)]
    assert _volumes(v2) == {"/app/data": "dataset-store", "/init": "/repo/docker/postgres-init"}
    v1 = {"ports": ["127.0.0.1:5000:5000/tcp", "8080:80"], "volumes": ["pgdata:/var/lib:rw"]}
    assert list(_ports(v1)) == [("127.0.0.1", 5000, 5000), ("", 8080, 80)]
    assert _volumes(v1) == {"/var/lib": "pgdata"}


# -- the same users and rights as the native stack (issue 19, item 9) ------------------------


def test_only_the_servers_hold_the_server_secrets(resolved: dict[str, Any]) -> None:
    """Workers and the deployments one-shot: the Prefect auth string and the `pipeline`
    password only; MLflow's admin password reaches mlflow and mlflow-setup alone."""
    holders: dict[str, set[str]] = {}
    for name, service in resolved["services"].items():
        values = " ".join(_environment(service).values())
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
    assert _argv(service["command"]) == ["python", "-m", "fmnist.stack.mlflow_setup"]
    env = _environment(service)
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["FMNIST_MLFLOW_ADMIN_PASSWORD"] == SECRETS["MLFLOW_ADMIN_PASSWORD"]
    assert env["FMNIST_MLFLOW_PIPELINE_PASSWORD"] == SECRETS["MLFLOW_PIPELINE_PASSWORD"]
    assert env["FMNIST_MLFLOW_VIEWER_PASSWORD"] == SECRETS["MLFLOW_VIEWER_PASSWORD"]
    assert service["depends_on"]["mlflow"]["condition"] == "service_healthy"
    assert service.get("restart", "no") == "no"


def test_mlflow_admits_only_its_own_browser_origin(resolved: dict[str, Any]) -> None:
    env = _environment(resolved["services"]["mlflow"])
    origins = env["MLFLOW_SERVER_CORS_ALLOWED_ORIGINS"].split(",")
    assert origins == ["http://127.0.0.1:5000", "http://localhost:5000"]
    image = (ROOT / "docker" / "mlflow.Dockerfile").read_text()
    # The app that holds MLflow to that list is installed in the image.
    assert "COPY stack/mlflow_app.py" in image
    assert 'fmnist-basic-auth = "fmnist_mlflow_app:create_app"' in image


def test_servers_and_workers_run_as_different_users(resolved: dict[str, Any]) -> None:
    built = _built_services()

    def image_user(service: str) -> str:
        users = [a for k, a in _instructions(built[service][1]) if k == "USER"]
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
