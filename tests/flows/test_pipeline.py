"""End to end: the smoke profile through the real Prefect flow into a temporary MLflow store."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tasks.models import REGISTRY, ModelSpec

pytestmark = pytest.mark.e2e

EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "epoch_seconds")
CHILD_ARTIFACTS = {
    "learning_curves.png",
    "confusion_matrix.png",
    "model_summary.txt",
    "classification_report.txt",
}


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    """Prefect's test harness (a temporary API + database) with its own result storage."""
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    storage = tmp_path_factory.mktemp("prefect-storage")
    with prefect_test_harness(), temporary_settings({PREFECT_LOCAL_STORAGE_PATH: storage}):
        yield


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, debian_dir):
    root = tmp_path_factory.mktemp("pipeline")
    return {
        "tracking.tracking_uri": f"sqlite:///{root}/mlruns/mlflow.db",
        "tracking.artifact_location": str(root / "mlruns" / "artifacts"),
        "data.cache_dir": str(root / "data" / "fashion-mnist"),
        "data.prepared_dir": str(root / "data" / "prepared"),
        "data.sources": [str(debian_dir)],
    }


def task_states(flow_state) -> dict[str, str]:
    """Task run name -> state name, for one flow run, read back through the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[flow_state.state_details.flow_run_id])
            )
        )
    return {r.name: r.state.name for r in runs}


def runs_of(client: MlflowClient, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], max_results=100)


@pytest.fixture(scope="module")
def first_run(harness, workdir):
    from flows.pipeline import fashion_mnist_pipeline

    state = fashion_mnist_pipeline(
        profile="smoke", epochs=2, overrides=dict(workdir), return_state=True
    )
    return state


def test_flow_completes_and_returns_accuracies(first_run):
    assert first_run.is_completed(), first_run.message
    summary = first_run.result()
    assert list(summary) == list(REGISTRY)
    assert all(0.0 <= acc <= 1.0 for acc in summary.values())


def test_one_parent_four_children_with_metrics_tags_artifacts(first_run, workdir):
    client = MlflowClient(tracking_uri=workdir["tracking.tracking_uri"])
    runs = runs_of(client, "fashion-mnist-cnn")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.info.run_name for r in children) == sorted(REGISTRY)
    assert len(runs) == 5

    # Parent: resolved config, dataset digest, seed, backend and device as params.
    p = parent.data.params
    assert p["profile"] == "smoke" and p["train.epochs"] == "2" and p["seed"] == "42"
    assert len(p["dataset_digest"]) == 64
    assert p["keras_backend"] == "tensorflow" and p["device"]
    assert parent.info.status == "FINISHED"
    parent_files = {f.path for f in client.list_artifacts(parent.info.run_id)}
    assert {"config.yaml", "summary.json", "augmentation"} <= parent_files
    assert [f.path for f in client.list_artifacts(parent.info.run_id, "augmentation")] == [
        "augmentation/first_image_variants.png"
    ]
    summary = json.loads(
        Path(client.download_artifacts(parent.info.run_id, "summary.json")).read_text()
    )
    assert set(summary["test_accuracy"]) == set(REGISTRY)
    assert {"fashion-mnist-train", "fashion-mnist-test"} == {
        d.dataset.name for d in parent.inputs.dataset_inputs
    }

    for child in children:
        name = child.info.run_name
        spec = REGISTRY[name]
        assert child.info.status == "FINISHED"
        assert child.data.params["model"] == name
        assert child.data.params["param_count"] == str(spec.book_params)
        assert child.data.params["dataset_digest"] == p["dataset_digest"]
        assert child.data.params["seed"] == "42"
        assert child.data.params["keras_backend"] == "tensorflow"
        assert float(child.data.tags["book_test_accuracy"]) == spec.book_test_accuracy
        # Per-epoch metrics, one point per epoch, logged while training ran.
        for key in EPOCH_METRICS:
            history = client.get_metric_history(child.info.run_id, key)
            assert [m.step for m in history] == [1, 2], key
        metrics = child.data.metrics
        assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["test_loss"] > 0
        assert len([k for k in metrics if k.startswith("test_f1.")]) == 10
        files = {f.path for f in client.list_artifacts(child.info.run_id)}
        assert files >= CHILD_ARTIFACTS, files
        # The Keras model, logged with a signature.
        models = client.search_logged_models(
            experiment_ids=[child.info.experiment_id],
            filter_string=f"source_run_id = '{child.info.run_id}'",
        )
        assert len(models) == 1
        assert models[0].model_id
        inputs = {d.dataset.name for d in child.inputs.dataset_inputs}
        expected = "fashion-mnist-train+augmented" if spec.augmented else "fashion-mnist-train"
        assert expected in inputs

    # vgg_augmented trains on originals + augmented images (smoke: 512 + 256).
    aug = next(c for c in children if c.info.run_name == "vgg_augmented")
    plain = next(c for c in children if c.info.run_name == "vgg")
    n_aug = int(aug.data.params["train_samples"]) + int(aug.data.params["val_samples"])
    n_plain = int(plain.data.params["train_samples"]) + int(plain.data.params["val_samples"])
    assert (n_plain, n_aug) == (512, 512 + 256)


def test_logged_model_loads_and_predicts(first_run, workdir):
    import mlflow
    import numpy as np

    client = MlflowClient(tracking_uri=workdir["tracking.tracking_uri"])
    child = next(
        r for r in runs_of(client, "fashion-mnist-cnn") if r.info.run_name == "pool_dropout"
    )
    (logged,) = client.search_logged_models(
        experiment_ids=[child.info.experiment_id],
        filter_string=f"source_run_id = '{child.info.run_id}'",
    )
    mlflow.set_tracking_uri(workdir["tracking.tracking_uri"])
    model = mlflow.pyfunc.load_model(f"models:/{logged.model_id}")
    assert model.metadata.signature is not None
    out = np.asarray(model.predict(np.zeros((2, 28, 28, 1), np.float32)))
    assert out.shape == (2, 10)


def test_second_run_is_served_from_the_cache(first_run, workdir):
    from flows.pipeline import fashion_mnist_pipeline

    state = fashion_mnist_pipeline(
        profile="smoke",
        models=["pool_dropout", "vgg_augmented"],
        overrides=dict(workdir),
        return_state=True,
    )
    assert state.is_completed(), state.message
    states = task_states(state)
    cached = {name.rsplit("-", 1)[0]: s for name, s in states.items() if s == "Cached"}
    assert set(cached) == {"download", "augment"}, states


def test_failing_model_fails_the_run_and_keeps_the_others(first_run, workdir, monkeypatch):
    """A model that cannot be built: its child and the parent end FAILED with the reason,
    the other model still trains and is logged; a stale augment cache is recomputed."""
    from flows.pipeline import fashion_mnist_pipeline

    def broken(name: str):
        raise RuntimeError("this model cannot be built")

    monkeypatch.setitem(REGISTRY, "broken", ModelSpec("broken", broken, "fails on purpose", 1, 0.5))
    shutil.rmtree(workdir["data.prepared_dir"])  # the augment cache now points at nothing
    state = fashion_mnist_pipeline(
        profile="smoke",
        models=["broken", "vgg_augmented"],
        overrides=dict(workdir),
        return_state=True,
    )
    assert state.is_failed()
    assert "broken: RuntimeError: this model cannot be built" in state.message
    states = task_states(state)
    augment_runs = sorted(s for name, s in states.items() if name.startswith("augment-"))
    # The cache hit pointed at a deleted file, so the task ran again with refresh_cache.
    assert augment_runs == ["Cached", "Completed"], states

    client = MlflowClient(tracking_uri=workdir["tracking.tracking_uri"])
    newest = sorted(runs_of(client, "fashion-mnist-cnn"), key=lambda r: r.info.start_time)
    children = {r.info.run_name: r for r in newest[-2:]}
    parent = newest[-3]
    assert children["broken"].info.status == "FAILED"
    assert "cannot be built" in children["broken"].data.tags["failure_reason"]
    assert children["vgg_augmented"].info.status == "FINISHED"
    assert "test_accuracy" in children["vgg_augmented"].data.metrics
    assert parent.info.status == "FAILED"
    assert "broken" in parent.data.tags["failure_reason"]
    assert Path(workdir["data.prepared_dir"]).is_dir()  # augmented again


def test_cli_runs_on_the_ephemeral_api(tmp_path, workdir):
    """`fmnist run` as a user types it: no server, Prefect's ephemeral API, a SQLite store."""
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
    }
    env.pop("PREFECT_API_URL", None)
    args = [
        sys.executable,
        "-m",
        "flows.cli",
        "run",
        "--profile",
        "smoke",
        "train.models=[pool_dropout]",
        f"data.sources=[{workdir['data.sources'][0]}]",
        f"data.cache_dir={tmp_path}/cache",
        f"tracking.artifact_location={tmp_path}/artifacts",
    ]
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "pool_dropout" in proc.stdout and "chapter" in proc.stdout
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    runs = runs_of(client, "fashion-mnist-cnn")
    assert sorted(r.info.run_name for r in runs) == ["pipeline-smoke", "pool_dropout"]
    assert "compare-runs" in proc.stdout + proc.stderr
