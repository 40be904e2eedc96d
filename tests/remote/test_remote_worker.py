"""A GPU worker on another machine (issue 16): a second host in a network namespace, as a
user that can read none of our files, reaching the stack only through TLS and the code only
through a git server at the deployed commit. A pipeline triggered as the dashboard does trains
all four models there; then the refusals: a wrong credential, a worker whose packages differ
from the lock, the git server away, plain HTTP off loopback at `stack-up`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from fmnist.stack import REPO_ROOT
from fmnist.stages.environment import read_lock
from fmnist.stages.models import REGISTRY
from tests.remote.conftest import EXPERIMENT, WORKER, Remote

pytestmark = pytest.mark.remote

WORKER_UP_S = 180  # the worker's first heartbeat (imports on a busy 2-core machine)
PIPELINE_S = 1500
REFUSAL_S = 300  # a refused run ends within this (clone retries, imports)


def wait_final(client, flow_run_id, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.read_flow_run(flow_run_id)
        if run.state is not None and run.state.is_final():
            return run
        time.sleep(2)
    raise AssertionError(f"flow run {flow_run_id} not final after {timeout:.0f} s")


def wait_worker(remote: Remote, proc: subprocess.Popen, log: Path, since: float) -> None:
    """Until the remote worker's heartbeat reaches the server (through the TLS front)."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + WORKER_UP_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the worker exited: {log.read_text()[-3000:]}"
        with remote.prefect_settings(), get_client(sync_client=True) as client:
            for worker in client.read_workers_for_work_pool("gpu"):
                beat = worker.last_heartbeat_time
                if worker.name == WORKER and beat and beat.timestamp() >= since:
                    return
        time.sleep(2)
    raise AssertionError(f"no heartbeat of {WORKER}: {log.read_text()[-3000:]}")


def logs_of(flow_run_id) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return "\n".join(log.message for log in logs)


def train_request(model: str = "conv_only") -> dict:
    """A training run that fails before it needs a dataset or a parent (refusal tests)."""
    return {
        "model_name": model,
        "dataset_uri": "runs:/0/datasets/none.npz",
        "dataset_sha256": "0" * 64,
        "parent_run_id": "0" * 32,
        "config": {},
    }


@pytest.fixture(scope="module")
def worker(remote: Remote) -> subprocess.Popen:
    """The worker of docs/remote.md: `sh box1.sh`, the lock's packages, nothing else."""
    log = remote.host.root / "worker.log"
    started = time.time()
    remote.worker = remote.start_worker(remote.host.venv, log)
    wait_worker(remote, remote.worker, log, started)
    return remote.worker


def test_the_second_host_reads_none_of_our_files_and_reaches_only_tls(remote: Remote):
    host, stack = remote.host, remote.stack
    probe_ca = host.home / "probe-ca.pem"
    probe_ca.write_bytes(stack.proxy.ca_file.read_bytes())
    os.chown(probe_ca, host.uid, host.gid)
    closed = [
        REPO_ROOT / "pyproject.toml",
        REPO_ROOT / ".venv" / "bin" / "python",
        REPO_ROOT / "data",
        stack.state_dir / "secrets.env",
        stack.state_dir / "stack.json",
        stack.state_dir / "data",
        stack.state_dir / "tls" / "ca.key",
    ]
    front = stack.public
    plain = [
        (host.host_address, stack.ports.prefect),  # the servers listen on loopback only
        (host.host_address, stack.ports.mlflow),
        ("127.0.0.1", stack.ports.mlflow),  # this namespace's loopback: nothing there
        ("192.0.2.1", 443),  # anywhere else: no route
    ]
    code = f"""
import json, os, socket, ssl, urllib.request
out = {{"read": {{}}, "connect": {{}}}}
for path in {[str(p) for p in closed]!r}:
    try:
        os.listdir(path) if os.path.isdir(path) else open(path, "rb").close()
        out["read"][path] = "read"
    except OSError as exc:
        out["read"][path] = type(exc).__name__
try:
    import fmnist
    out["fmnist"] = fmnist.__file__
except ImportError as exc:
    out["fmnist"] = type(exc).__name__
for host, port in {plain!r}:
    s = socket.socket(); s.settimeout(5)
    try:
        s.connect((host, port)); out["connect"][f"{{host}}:{{port}}"] = "open"
    except OSError as exc:
        out["connect"][f"{{host}}:{{port}}"] = type(exc).__name__
    finally:
        s.close()
url = "{front.mlflow_url}/health"
ctx = ssl.create_default_context(cafile="{probe_ca}")
with urllib.request.urlopen(url, context=ctx, timeout=20) as r:
    out["tls"] = r.status
try:  # the system's CAs do not know ours: refused, never skipped
    urllib.request.urlopen(url, timeout=20)
    out["unverified"] = "accepted"
except Exception as exc:
    out["unverified"] = type(getattr(exc, "reason", exc)).__name__
print(json.dumps(out))
"""
    seen = host.python(code)
    assert set(seen["read"].values()) == {"PermissionError"}, seen["read"]
    assert seen["fmnist"] == "ModuleNotFoundError"  # nothing of ours installed there
    assert "open" not in seen["connect"].values(), seen["connect"]
    assert seen["tls"] == 200
    assert seen["unverified"] == "SSLCertVerificationError"


def test_the_deployments_pull_the_deployed_commit_from_git(remote: Remote):
    from prefect.client.orchestration import get_client

    with remote.prefect_settings(), get_client(sync_client=True) as client:
        for name in remote.deployments:
            deployment = client.read_deployment_by_name(name)
            assert deployment.pull_steps == [
                {
                    "prefect.deployments.steps.git_clone": {
                        "repository": remote.git.url,
                        "commit_sha": remote.commit,
                    }
                }
            ], name


@pytest.fixture(scope="module")
def pipeline_run(remote: Remote, worker: subprocess.Popen):
    """The pipeline triggered as the dashboard's Run > Custom run does (smoke profile)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    data = remote.stack.state_dir / "data" / "remote-e2e"  # the host's cpu worker writes here
    overrides = {
        "data.cache_dir": str(data / "fashion-mnist"),
        "data.prepared_dir": str(data / "prepared"),
        "tracking.experiment": EXPERIMENT,
    }  # data.store_uri: auto, so the tracking server's artifact store
    from fmnist.stack.users import owned_dir, worker_user

    owned_dir(data.parent, worker_user(create=False), 0o755)
    owned_dir(data, worker_user(create=False), 0o755)
    with remote.prefect_settings(), get_client(sync_client=True) as client:
        pipeline = client.read_deployment_by_name("fashion-mnist-pipeline/pipeline")
        flow_run = client.create_flow_run_from_deployment(
            pipeline.id, parameters={"profile": "smoke", "overrides": overrides}
        )
        done = wait_final(client, flow_run.id, PIPELINE_S)
        training = client.read_flow_runs(
            deployment_filter=DeploymentFilter(
                id=DeploymentFilterId(any_=[remote.deployments["train-model/train-model"]])
            )
        )
        logs = {r.id: logs_of(r.id) for r in training}
    return done, training, logs


def test_a_dashboard_run_trains_all_four_models_on_the_remote_worker(
    remote: Remote, pipeline_run, tmp_path: Path
):
    done, training, logs = pipeline_run
    assert done.state.is_completed(), done.state.message
    assert sorted(r.parameters["model_name"] for r in training) == sorted(REGISTRY)
    assert all(r.state.is_completed() for r in training), [r.state for r in training]
    assert {r.work_pool_name for r in training} == {"gpu"}
    for text in logs.values():  # each picked up by the second host's worker, none other
        assert f"Worker {WORKER!r} submitting flow run" in text, text[-2000:]
    # The dataset came through the tracking server, once for the machine, then its cache.
    assert all(r.parameters["dataset_uri"].startswith("runs:/") for r in training)
    fetched = [line for text in logs.values() for line in text.splitlines() if "cache" in line]
    assert sum("downloaded into" in line for line in fetched) == 1, fetched
    assert sum("found in" in line for line in fetched) == len(REGISTRY) - 1, fetched

    with remote.mlflow_admin():
        client = MlflowClient(tracking_uri=remote.stack.mlflow.url)
        exp = client.get_experiment_by_name(EXPERIMENT)
        runs = client.search_runs([exp.experiment_id])
        [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        assert parent.info.status == "FINISHED"
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert sorted(r.info.run_name for r in children) == sorted(REGISTRY)
        lock = read_lock((REPO_ROOT / "requirements.lock").read_text())
        for child in children:
            tags = child.data.tags
            assert child.info.status == "FINISHED"
            assert 0.0 <= child.data.metrics["test_accuracy"] <= 1.0
            assert tags["mlflow.user"] == remote.host.user  # made by the second host's process
            assert child.info.user_id == remote.host.user
            assert tags["mlflow.source.git.commit"] == remote.commit  # the clone it ran
            assert tags["package.keras"] == lock["keras"]  # the packages it ran with
            assert tags["package.numpy"] == lock["numpy"]
            files = {f.path for f in client.list_artifacts(child.info.run_id)}
            assert {"learning_curves.png", "environment"} <= files, files
            models = client.search_logged_models(
                experiment_ids=[exp.experiment_id],
                filter_string=f"source_run_id = '{child.info.run_id}'",
            )
            assert len(models) == 1, "no model logged"
            local = client.download_artifacts(
                child.info.run_id, "learning_curves.png", str(tmp_path)
            )
            assert Path(local).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        # stack-up to the first epoch the remote worker finished (docs/remote.md).
        first_epoch = min(
            m.timestamp / 1000
            for child in children
            for m in client.get_metric_history(child.info.run_id, "val_accuracy")
        )
    started = json.loads((remote.stack.state_dir / "stack.json").read_text())
    print(f"\nstack-up -> first remote epoch: {first_epoch - started['started_at']:.0f} s")


def test_its_mlflow_user_is_its_own_and_a_wrong_credential_is_refused(remote: Remote, worker):
    """Requests from the second host through the TLS front: the worker's user may read and
    write runs, not move the champion alias nor make users; a wrong password gets 401; a
    worker with a wrong Prefect auth string never gets a heartbeat in."""
    script = remote.script.read_text()
    password = script.split("MLFLOW_TRACKING_PASSWORD=")[1].split()[0].strip("'")
    base, ca = remote.stack.public.mlflow_url, remote.host.home / "probe-ca.pem"
    checks = {
        "read": ("GET", "/api/2.0/mlflow/experiments/get-by-name?experiment_name=" + EXPERIMENT),
        "alias": ("POST", "/api/2.0/mlflow/registered-models/alias"),
        "users": ("POST", "/api/2.0/mlflow/users/create"),
    }
    bodies = {
        "alias": {"name": "fashion-mnist-cnn", "alias": "champion", "version": "1"},
        "users": {"username": "intruder", "password": "x" * 20},
    }
    code = f"""
import base64, json, ssl, urllib.error, urllib.request
ctx = ssl.create_default_context(cafile="{ca}")
def status(method, path, user, password, body=None):
    req = urllib.request.Request("{base}" + path, method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={{"Content-Type": "application/json", "Authorization": "Basic " +
                 base64.b64encode(f"{{user}}:{{password}}".encode()).decode()}})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
checks, bodies = {checks!r}, {bodies!r}
user = "worker-{WORKER}"
out = {{k: status(m, p, user, "{password}", bodies.get(k)) for k, (m, p) in checks.items()}}
out["wrong"] = status(*checks["read"], "worker-{WORKER}", "wrong-password-123456")
print(json.dumps(out))
"""
    seen = remote.host.python(code)
    assert seen == {"read": 200, "alias": 403, "users": 403, "wrong": 401}, seen

    wrong = remote.host.home / "wrong.sh"
    auth = script.split("PREFECT_API_AUTH_STRING=")[1].split()[0]
    wrong.write_text(script.replace(auth, "'fmnist:not-the-token'").replace(WORKER, "intruder"))
    os.chown(wrong, remote.host.uid, remote.host.gid)
    venv = remote.host.venv
    env = {"PATH": f"{venv}/bin:/usr/bin:/bin", "PYTHON": f"{venv}/bin/python"}
    result = remote.host.run(["timeout", "90", "sh", str(wrong)], env, timeout=120)
    assert result.returncode != 0
    assert "401" in result.stdout + result.stderr
    from prefect.client.orchestration import get_client

    with remote.prefect_settings(), get_client(sync_client=True) as client:
        assert "intruder" not in {w.name for w in client.read_workers_for_work_pool("gpu")}


def test_a_worker_whose_packages_differ_fails_the_run_naming_them(remote: Remote, worker):
    from prefect.client.orchestration import get_client

    lock = read_lock((REPO_ROOT / "requirements.lock").read_text())
    skewed = remote.host.environment("skewed")
    remote.host.fake_version(skewed, "keras", "3.0.0")
    remote.host.fake_version(skewed, "numpy", "1.26.0")
    remote.host.stop(remote.worker)
    log = remote.host.root / "skewed.log"
    started = time.time()
    proc = remote.start_worker(skewed, log)
    try:
        wait_worker(remote, proc, log, started)
        with remote.prefect_settings(), get_client(sync_client=True) as client:
            deployment = remote.deployments["train-model/train-model"]
            run = client.create_flow_run_from_deployment(deployment, parameters=train_request())
            done = wait_final(client, run.id, REFUSAL_S)
        assert done.state.is_failed(), done.state
        message = done.state.message or ""
        assert f"keras {lock['keras']} locked, 3.0.0 installed" in message, message
        assert f"numpy {lock['numpy']} locked, 1.26.0 installed" in message, message
    finally:
        remote.host.stop(proc)
        log = remote.host.root / "worker-again.log"
        started = time.time()
        remote.worker = remote.start_worker(remote.host.venv, log)
        wait_worker(remote, remote.worker, log, started)


def test_the_git_server_away_fails_the_run_clearly_within_a_bound(remote: Remote, worker):
    from prefect.client.orchestration import get_client

    remote.git.stop()
    try:
        with remote.prefect_settings(), get_client(sync_client=True) as client:
            deployment = remote.deployments["train-model/train-model"]
            started = time.monotonic()
            run = client.create_flow_run_from_deployment(deployment, parameters=train_request())
            done = wait_final(client, run.id, REFUSAL_S)
            elapsed = time.monotonic() - started
            text = logs_of(run.id)
        assert done.state.is_crashed() or done.state.is_failed(), done.state
        assert "Executing deployment step: git_clone" in text, text[-3000:]
        # Prefect's pull step reports the failure on the worker's console, not in the run's
        # logs: what the second machine's operator reads.
        console = remote.worker_log.read_text(errors="replace")
        assert f"Failed to clone repository {remote.git.url!r}" in console, console[-3000:]
        assert elapsed < REFUSAL_S
    finally:
        remote.git.start()


def test_plain_http_off_loopback_is_refused_at_stack_up(remote: Remote, tmp_path: Path):
    state = tmp_path / "stack"
    env = dict(os.environ, FMNIST_PUBLIC_ADDRESS=remote.host.host_address, FMNIST_TLS="off")
    result = subprocess.run(
        [sys.executable, "-m", "fmnist.stack", "up", "--state-dir", str(state)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert f"refusing plain HTTP on {remote.host.host_address}" in result.stderr
    assert not (state / "supervisor").exists()  # nothing was started
