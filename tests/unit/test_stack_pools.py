"""The work pools' lockdown without a server: the base job template the code builds refuses
every job variable that could choose what runs (checked with the validation Prefect's server
applies to a flow run's job variables), and a worker rendering it runs the engine whatever it
is given; pool creation through a stand-in client; the GPU limit and the workers per card."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from types import SimpleNamespace
from typing import Any

import pytest

from fmnist.stack import StackError, pools

INJECTIONS = [
    {"command": "/bin/sh -c 'id > /tmp/owned'"},
    {"env": {"PYTHONSTARTUP": "/tmp/owned"}},
    {"working_dir": "/tmp"},
    {"keras_backend": "/bin/sh"},
    {"stream_output": "yes"},
    {"labels": {"a": 1}},
    {"name": 3},
]
HARMLESS = [
    {},
    {"keras_backend": "jax"},
    {"name": "my-run"},
    {"name": None},
    {"labels": {"team": "vision"}},
    {"stream_output": False},
]


def server_validation(template: dict[str, Any], job_variables: dict[str, Any]) -> None:
    """What Prefect's server does with a flow run's job variables on its deployment's pool
    (prefect/server/api/validation.py: _validate_work_pool_job_variables)."""
    from prefect.utilities.schema_tools.validation import is_valid_schema, validate

    schema = template["variables"]
    is_valid_schema(schema, preprocess=False)
    defaults = {k: v["default"] for k, v in schema["properties"].items() if "default" in v}
    validate(
        {**defaults, **job_variables},
        schema,
        raise_on_error=True,
        preprocess=True,
        ignore_required=False,
        allow_none_with_default=True,
    )


class NoServer:
    """A client for a template with no block or variable references: never called (without
    one Prefect would start a temporary server just to look nothing up)."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the template made the worker call the server: {name}")


def render(template: dict[str, Any], values: dict[str, Any]) -> Any:
    """The process worker's job configuration from the template and a run's values."""
    from prefect.workers.process import ProcessJobConfiguration

    build = ProcessJobConfiguration.from_template_and_values(template, values, client=NoServer())
    return asyncio.run(build)


@pytest.mark.parametrize("job_variables", INJECTIONS, ids=lambda v: next(iter(v)))
def test_the_template_refuses_what_could_choose_what_runs(job_variables: dict) -> None:
    from prefect.utilities.schema_tools.validation import ValidationError

    for backend in (None, "jax"):
        with pytest.raises(ValidationError):
            server_validation(pools.base_job_template(backend), job_variables)


@pytest.mark.parametrize("job_variables", HARMLESS, ids=str)
def test_the_template_lets_a_run_choose_harmless_things(job_variables: dict) -> None:
    server_validation(pools.base_job_template("tensorflow"), job_variables)


def test_the_template_declares_only_its_variables() -> None:
    template = pools.base_job_template(None)
    variables = template["variables"]
    assert variables["type"] == "object" and variables["additionalProperties"] is False
    assert set(variables["properties"]) == {"name", "labels", "stream_output", "keras_backend"}
    assert variables["properties"]["keras_backend"]["enum"] == list(pools.BACKENDS)
    assert variables["properties"]["labels"]["additionalProperties"] == {"type": "string"}
    assert variables["properties"]["stream_output"]["default"] is True
    job = template["job_configuration"]
    assert set(job) == {"env", "labels", "name", "stream_output"}  # no command, no working_dir
    assert job["env"] == {"KERAS_BACKEND": "{{ keras_backend }}"}


def test_the_pool_form_names_each_setting() -> None:
    """What the dashboard shows a person starting a run by hand."""
    props = pools.base_job_template(None)["variables"]["properties"]
    assert {k: (v.get("title"), v.get("description")) for k, v in props.items()} == {
        "name": ("Name", "Name given to the flow run's process."),
        "labels": ("Labels", None),
        "stream_output": ("Stream Output", "Stream the flow run's output to the worker's log."),
        "keras_backend": (
            "Keras backend",
            "KERAS_BACKEND of the flow run's process; unset: the profile decides.",
        ),
    }
    assert props["name"]["default"] is None
    assert props["name"]["anyOf"] == [{"type": "string"}, {"type": "null"}]
    assert props["keras_backend"]["type"] == "string"
    assert props["labels"]["type"] == "object"
    assert props["stream_output"]["type"] == "boolean"
    job = pools.base_job_template(None)["job_configuration"]
    assert job == {
        "env": {"KERAS_BACKEND": "{{ keras_backend }}"},
        "labels": "{{ labels }}",
        "name": "{{ name }}",
        "stream_output": "{{ stream_output }}",
    }


def test_a_worker_given_a_command_anyway_runs_the_engine(tmp_path) -> None:
    from prefect.client.schemas.objects import FlowRun

    template = pools.base_job_template(None)
    config = render(template, {"command": "/bin/sh -c id", "working_dir": str(tmp_path)})
    assert config.command is None and config.working_dir is None
    config.prepare_for_flow_run(FlowRun(flow_id=uuid.uuid4(), name="injected"))
    assert config.command.endswith("-m prefect.engine")
    assert str(tmp_path) not in str(config.working_dir)
    # (A run's `env` a worker would merge in: Prefect 3.9 deep-merges it whatever the template
    # says, so the server's refusal above is what keeps it out.)
    assert render(template, {"keras_backend": "jax"}).env == {"KERAS_BACKEND": "jax"}
    assert "KERAS_BACKEND" not in render(template, {}).env  # unset: the profile decides


def test_the_gpu_pools_default_backend() -> None:
    template = pools.base_job_template("jax")
    assert template["variables"]["properties"]["keras_backend"]["default"] == "jax"
    assert render(template, {}).env["KERAS_BACKEND"] == "jax"
    assert "default" not in pools.base_job_template("")["variables"]["properties"]["keras_backend"]
    with pytest.raises(StackError, match=r"KERAS_BACKEND='torch2' is none of \["):
        pools.base_job_template("torch2")


class StandInClient:
    """What ensure_pools asks of Prefect's client: read a pool, create or overwrite one."""

    def __init__(self, existing: dict[str, dict[str, Any]]) -> None:
        self.existing = existing
        self.created: list[tuple[Any, bool]] = []

    def read_work_pool(self, name: str) -> Any:
        """The pool as the server would give it, or ObjectNotFound."""
        from prefect.exceptions import ObjectNotFound

        if name not in self.existing:
            raise ObjectNotFound(None)
        return SimpleNamespace(name=name, base_job_template=self.existing[name])

    def create_work_pool(self, pool: Any, overwrite: bool = False) -> None:
        """Record what would be created."""
        self.created.append((pool, overwrite))


def backend_of(pool: Any) -> str | None:
    """The keras_backend default of a pool being created."""
    return pool.base_job_template["variables"]["properties"]["keras_backend"].get("default")


def test_ensure_pools_creates_each_pool_once_locked_down(monkeypatch) -> None:
    monkeypatch.setenv("FMNIST_GPU_CONCURRENCY", "3")
    client = StandInClient({})
    pools.ensure_pools(client, ["gpu", "cpu", "gpu"], keras_backend="jax")
    assert [(p.name, p.type, overwrite) for p, overwrite in client.created] == [
        ("cpu", "process", True),
        ("gpu", "process", True),
    ]
    cpu, gpu = (p for p, _ in client.created)
    assert backend_of(gpu) == "jax" and backend_of(cpu) is None  # only the gpu pool's
    assert gpu.concurrency_limit == 3 and cpu.concurrency_limit is None
    assert cpu.base_job_template == pools.base_job_template(None)


def test_ensure_pools_keeps_or_clears_the_gpu_pools_backend(monkeypatch) -> None:
    monkeypatch.setenv("FMNIST_GPU_CONCURRENCY", "1")
    existing = {"gpu": pools.base_job_template("jax"), "cpu": pools.base_job_template(None)}
    kept = StandInClient(existing)
    pools.ensure_pools(kept, ["gpu"])  # None: keep what the pool has
    assert backend_of(kept.created[0][0]) == "jax"
    cleared = StandInClient(existing)
    pools.ensure_pools(cleared, ["gpu"], keras_backend="")  # "": none, the profile decides
    assert backend_of(cleared.created[0][0]) is None
    fresh = StandInClient({"gpu": {}})  # a pool with no template: no default to keep
    pools.ensure_pools(fresh, ["gpu"])
    assert backend_of(fresh.created[0][0]) is None
    assert pools._current_backend(StandInClient({}), "gpu") is None


def test_gpu_concurrency(monkeypatch) -> None:
    monkeypatch.setattr(pools, "gpu_count", lambda: 4)
    monkeypatch.delenv("FMNIST_GPU_CONCURRENCY", raising=False)
    assert pools.gpu_concurrency() == 4
    monkeypatch.setattr(pools, "gpu_count", lambda: 0)
    assert pools.gpu_concurrency() == 1
    monkeypatch.setenv("FMNIST_GPU_CONCURRENCY", "2")
    assert pools.gpu_concurrency() == 2
    monkeypatch.setenv("FMNIST_GPU_CONCURRENCY", "0")
    assert pools.gpu_concurrency() == 1


def test_gpu_count_reads_nvidia_smi(monkeypatch) -> None:
    calls = []

    def run(args, **kwargs):
        calls.append((args, kwargs))
        return SimpleNamespace(stdout="GPU 0: H200 (UUID: a)\nGPU 1: H200 (UUID: b)\nnoise\n")

    def which(name: str) -> str | None:
        return "/usr/bin/nvidia-smi" if name == "nvidia-smi" else None

    # Stand-ins for the pools module's view of subprocess and shutil only (the real modules,
    # which pytest and mutmut use too, stay as they are).
    def use(run_with, which_with=which) -> None:
        fake = SimpleNamespace(run=run_with, TimeoutExpired=subprocess.TimeoutExpired)
        monkeypatch.setattr(pools, "subprocess", fake)
        monkeypatch.setattr(pools, "shutil", SimpleNamespace(which=which_with))

    use(run)
    assert pools.gpu_count() == 2
    assert calls == [
        (
            ["nvidia-smi", "-L"],
            {"capture_output": True, "text": True, "timeout": 20, "check": False},
        )
    ]

    def broken(args, **kwargs):
        raise OSError("no driver")

    def hung(args, **kwargs):
        raise subprocess.TimeoutExpired(args, kwargs["timeout"])

    for failing in (broken, hung):
        use(failing)
        assert pools.gpu_count() == 0
    use(run, lambda name: None)  # no nvidia-smi: not even tried
    calls.clear()
    assert pools.gpu_count() == 0 and calls == []


def test_one_worker_per_pool_and_one_per_card(monkeypatch) -> None:
    monkeypatch.setattr(pools, "gpu_count", lambda: 2)
    assert pools.worker_specs(["cpu", "gpu"]) == [
        ("cpu", "worker-cpu", None, {}),
        ("gpu", "worker-gpu-0", 1, {"CUDA_VISIBLE_DEVICES": "0"}),
        ("gpu", "worker-gpu-1", 1, {"CUDA_VISIBLE_DEVICES": "1"}),
    ]
    monkeypatch.setattr(pools, "gpu_count", lambda: 1)
    assert pools.worker_specs(["gpu", "cpu"]) == [
        ("gpu", "worker-gpu", None, {}),
        ("cpu", "worker-cpu", None, {}),
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("cpu", ("cpu",)),
        (" gpu , cpu,gpu", ("gpu", "cpu")),  # spaces and repeats ignored, order kept
        ("", None),
        (" , ", None),
    ],
)
def test_local_workers_name_the_pools_served_here(value, expected):
    assert pools.local_worker_pools(value) == expected


def test_local_workers_refuse_a_pool_that_does_not_exist(monkeypatch):
    monkeypatch.setenv(pools.LOCAL_WORKERS_ENV, "cpu,gpus")
    with pytest.raises(StackError) as err:
        pools.local_worker_pools()
    assert str(err.value) == "FMNIST_LOCAL_WORKERS='cpu,gpus': no pool 'gpus' (the pools: cpu, gpu)"
    with pytest.raises(StackError, match=r": no pool 'a', 'b' \(the pools"):
        pools.local_worker_pools("a,cpu,b")


def test_a_stack_serves_the_pools_its_last_up_served_unless_told_otherwise(tmp_path, monkeypatch):
    from fmnist.stack.core import Stack

    monkeypatch.delenv(pools.LOCAL_WORKERS_ENV, raising=False)
    assert Stack(tmp_path).pool_names == ("cpu", "gpu")  # never up here: every pool
    (tmp_path / "stack.json").write_text('{"ports": {}, "local_workers": ["cpu"]}')
    stack = Stack(tmp_path)
    assert stack.pool_names == ("cpu",)
    assert [name for name in stack.program_names if name.startswith("worker")] == ["worker-cpu"]
    monkeypatch.setenv(pools.LOCAL_WORKERS_ENV, "gpu")
    assert Stack(tmp_path).pool_names == ("gpu",)
    assert Stack(tmp_path, pools_=("cpu", "gpu")).pool_names == ("cpu", "gpu")
