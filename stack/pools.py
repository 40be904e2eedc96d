"""The work pools: the one place that creates them (stack-up and `stack.deployments apply`).

Both are process pools whose base job template leaves a flow run nothing that decides what
runs: no `command`, no `working_dir`, no free-form `env` (the server refuses job variables
the template does not declare: additionalProperties false). The job configuration reads no
command or working_dir either; a run's `env` a Prefect 3.9 worker would merge in whatever
the template says, so for `env` the server's refusal is the guard. What a run may choose:
its name, labels, output streaming, and the Keras backend from a fixed list (the `gpu`
pool's default: KERAS_BACKEND of `stack-up`'s environment, unset by default so the profile
decides). The `gpu` pool has a concurrency
limit (FMNIST_GPU_CONCURRENCY, default one run per GPU, 1 without a GPU), so excess training
runs wait in the queue.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from fmnist.stack import POOLS, StackError
from fmnist.stages.backend import BACKENDS

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

KERAS_BACKENDS = list(BACKENDS)  # the job variable's choices
GPU_POOL = "gpu"
LOCAL_WORKERS_ENV = "FMNIST_LOCAL_WORKERS"


def local_worker_pools(value: str | None = None) -> tuple[str, ...] | None:
    """The pools this machine's workers serve, from FMNIST_LOCAL_WORKERS (comma-separated);
    None when it is unset (the stack then serves what it served, else every pool). `cpu`
    when the GPUs are on other machines: a `gpu` worker here would take training runs from
    them (docs/remote.md)."""
    value = os.environ.get(LOCAL_WORKERS_ENV, "") if value is None else value
    names = tuple(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))
    if not names:
        return None
    if unknown := [n for n in names if n not in POOLS]:
        raise StackError(
            f"{LOCAL_WORKERS_ENV}={value!r}: no pool {', '.join(map(repr, unknown))} "
            f"(the pools: {', '.join(POOLS)})"
        )
    return names


def gpu_count() -> int:
    """How many NVIDIA GPUs `nvidia-smi -L` lists (0 without the tool or a GPU)."""
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def gpu_concurrency() -> int:
    """FMNIST_GPU_CONCURRENCY, else one run per GPU (at least 1)."""
    if value := os.environ.get("FMNIST_GPU_CONCURRENCY"):
        return max(1, int(value))
    return max(1, gpu_count())


def base_job_template(keras_backend: str | None = None) -> dict[str, Any]:
    """A process pool's template that only lets a run pick harmless things."""
    backend: dict[str, Any] = {
        "title": "Keras backend",
        "description": "KERAS_BACKEND of the flow run's process; unset: the profile decides.",
        "type": "string",
        "enum": KERAS_BACKENDS,
    }
    if keras_backend:
        if keras_backend not in KERAS_BACKENDS:
            raise StackError(f"KERAS_BACKEND={keras_backend!r} is none of {KERAS_BACKENDS}")
        backend["default"] = keras_backend
    return {
        "job_configuration": {
            # No "command" (the worker runs `python -m prefect.engine`), no "working_dir"
            # (the deployment's pull step decides), and env only from this fixed mapping.
            "env": {"KERAS_BACKEND": "{{ keras_backend }}"},
            "labels": "{{ labels }}",
            "name": "{{ name }}",
            "stream_output": "{{ stream_output }}",
        },
        "variables": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "name": {
                    "title": "Name",
                    "description": "Name given to the flow run's process.",
                    "anyOf": [{"type": "string"}, {"type": "null"}],
                    "default": None,
                },
                "labels": {
                    "title": "Labels",
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                },
                "stream_output": {
                    "title": "Stream Output",
                    "description": "Stream the flow run's output to the worker's log.",
                    "type": "boolean",
                    "default": True,
                },
                "keras_backend": backend,
            },
        },
    }


def _current_backend(client: SyncPrefectClient, name: str) -> str | None:
    """The keras_backend default an existing pool has (None: none, or no such pool)."""
    from prefect.exceptions import ObjectNotFound

    try:
        pool = client.read_work_pool(name)
    except ObjectNotFound:
        return None
    variables = (pool.base_job_template or {}).get("variables") or {}
    return (variables.get("properties") or {}).get("keras_backend", {}).get("default")


def ensure_pools(
    client: SyncPrefectClient, names: Iterable[str], keras_backend: str | None = None
) -> None:
    """Create each process pool, or bring an existing one's template and limit up to date.

    keras_backend: the `gpu` pool's default backend ("" for none: the profile decides);
    None keeps what the pool has (so applying deployments from a shell that happens to set
    KERAS_BACKEND changes nothing; `stack-up` passes its own environment's).
    """
    from prefect.client.schemas.actions import WorkPoolCreate

    for name in sorted(set(names)):
        backend = None
        if name == GPU_POOL:
            backend = _current_backend(client, name) if keras_backend is None else keras_backend
        pool = WorkPoolCreate(
            name=name,
            type="process",
            base_job_template=base_job_template(backend or None),
            concurrency_limit=gpu_concurrency() if name == GPU_POOL else None,
        )
        # overwrite: an existing pool (an older stack's may not be locked down) is updated
        # to this template and limit (None clears one).
        client.create_work_pool(pool, overwrite=True)


def worker_specs(pool_names: Iterable[str]) -> list[tuple[str, str, int | None, dict[str, str]]]:
    """(pool, name, run limit, extra environment) of each worker: one per pool; on a machine
    with several GPUs one `gpu` worker per card, that card alone visible to it, one run at a
    time."""
    specs = []
    for pool in pool_names:
        cards = gpu_count() if pool == GPU_POOL else 0
        if cards > 1:
            specs += [
                (pool, f"worker-{pool}-{c}", 1, {"CUDA_VISIBLE_DEVICES": str(c)})
                for c in range(cards)
            ]
        else:
            specs.append((pool, f"worker-{pool}", None, {}))
    return specs
