"""docker/compose.yaml and its Dockerfiles read without a Docker engine, for the compose tests
(test_compose.py, test_compose_rights.py): the compose tool's resolved configuration (`docker
compose config`, or docker-compose 1.29 where the v2 plugin is missing), the short and long
syntaxes of its ports, mounts and commands, and the Dockerfiles' instructions.

Their fixtures, `compose` (the tool) and `resolved` (every service, the `gpu` profile's
included), live with the other shared fixtures in tests/service_fixtures.py.
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

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker" / "compose.yaml"
CORE = {"postgres", "mlflow", "prefect-server", "cpu-worker"}
SERVICES = {*CORE, "gpu-worker"}
POOLS = {"cpu-worker": "cpu", "gpu-worker": "gpu"}
PUBLISHED = {"mlflow": 5000, "prefect-server": 4200}


def compose_command() -> list[str] | None:
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


def run_config(
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


def resolve(compose: list[str], *profiles: str) -> dict[str, Any]:
    """The resolved configuration, as the compose tool prints it."""
    result = run_config(compose, *profiles, secrets=SECRETS)
    assert result.returncode == 0, f"{' '.join(compose)} config failed:\n{result.stderr}"
    config = yaml.safe_load(result.stdout)
    assert isinstance(config, dict) and "services" in config, result.stdout
    return config


def command_of(command: str | list[str] | None) -> list[str]:
    """A service's command as an argv list (compose gives a string or a list)."""
    if command is None:
        return []
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a mapping (compose gives a mapping or KEY=value items)."""
    env = service.get("environment") or {}
    if isinstance(env, list):  # ["KEY=value", ...]
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def ports_of(service: dict[str, Any]) -> Iterator[tuple[str, int, int]]:
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


def volumes_of(service: dict[str, Any]) -> dict[str, str]:
    """target -> source of each mount, from v2's long or v1's short syntax."""
    mounts = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            mounts[volume["target"]] = str(volume.get("source", ""))
        else:
            source, target, *_ = str(volume).split(":")
            mounts[target] = source
    return mounts


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
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


def exec_form(arguments: str) -> list[str]:
    """A CMD's or RUN's arguments as a list, from the exec (JSON) or the shell form."""
    return json.loads(arguments) if arguments.startswith("[") else shlex.split(arguments)


def built_services() -> dict[str, tuple[Path, Path]]:
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
