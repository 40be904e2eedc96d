"""End to end: the smoke profile through the real Prefect flow into a temporary MLflow store."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from fmnist.stages.load import CLASS_NAMES
from fmnist.stages.models import REGISTRY, ModelSpec

pytestmark = pytest.mark.e2e

EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "epoch_seconds")
CHILD_ARTIFACTS = {
    "learning_curves.png",
    "confusion_matrix.png",
    "model_summary.txt",
    "classification_report.txt",
    "predictions.csv",
}


def folders(root: Path, debian_dir: Path) -> dict[str, object]:
    """Overrides that put the store, the caches and the checkpoints under root."""
    return {
        "tracking.tracking_uri": f"sqlite:///{root}/mlruns/mlflow.db",
        "tracking.artifact_location": str(root / "mlruns" / "artifacts"),
        "tracking.spool_dir": str(root / "spool"),
        "data.cache_dir": str(root / "data" / "fashion-mnist"),
        "data.prepared_dir": str(root / "data" / "prepared"),
        "data.store_uri": str(root / "data" / "store"),
        "train.checkpoint_dir": str(root / "checkpoints"),
        # Sampled every second, so that even a smoke model's few seconds of training get some.
        "tracking.system_metrics_interval_s": 1,
        "data.sources": [str(debian_dir)],
    }


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, debian_dir):
    """The folders the module's chained runs (first, second) share."""
    return folders(tmp_path_factory.mktemp("pipeline"), debian_dir)


def backend() -> str:
    """The Keras backend these tests (and the flows they run in-process) use."""
    import keras

    return keras.backend.backend()


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
    from fmnist.flows.pipeline import fashion_mnist_pipeline

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
    assert p["keras_backend"] == backend() and p["device"]
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
        assert child.data.params["param_count"] == str(spec.chapter_params)
        assert child.data.params["dataset_digest"] == p["dataset_digest"]
        assert child.data.params["seed"] == "42"
        assert child.data.params["keras_backend"] == backend()
        assert float(child.data.tags["chapter_test_accuracy"]) == spec.chapter_test_accuracy
        # Per-epoch metrics, one point per epoch, logged while training ran.
        for key in EPOCH_METRICS:
            history = client.get_metric_history(child.info.run_id, key)
            assert [m.step for m in history] == [1, 2], key
        metrics = child.data.metrics
        assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["test_loss"] > 0
        low, high = metrics["test_accuracy_ci_low"], metrics["test_accuracy_ci_high"]
        assert 0.0 <= low < metrics["test_accuracy"] < high <= 1.0  # Wilson, 500 images
        assert high - low < 0.1
        assert child.data.tags["test_set_digest"] == children[0].data.tags["test_set_digest"]
        kept = Path(client.download_artifacts(child.info.run_id, "predictions.csv")).read_text()
        rows = kept.splitlines()
        assert rows[0] == "index,label,predicted" and len(rows) == 1 + 500
        right = sum(label == predicted for _, label, predicted in (r.split(",") for r in rows[1:]))
        assert right / 500 == pytest.approx(metrics["test_accuracy"])
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
    from fmnist.tracking.client import fluent_uri

    # Through the tracker's helper: a bare set_tracking_uri would leak into os.environ.
    with fluent_uri(workdir["tracking.tracking_uri"]):
        model = mlflow.pyfunc.load_model(f"models:/{logged.model_id}")
    assert model.metadata.signature is not None
    # The served model (docs/serving.md): images in, one answer per image out.
    out = model.predict({"image": list(np.zeros((2, 28, 28, 1), np.float32))})
    assert len(out) == 2 and all(len(p) == 10 for p in out["probabilities"])
    assert set(out["class_name"]) <= set(CLASS_NAMES)


@pytest.fixture(scope="module")
def second_run(first_run, workdir):
    from fmnist.flows.pipeline import fashion_mnist_pipeline

    return fashion_mnist_pipeline(
        profile="smoke",
        models=["pool_dropout", "vgg_augmented"],
        overrides=dict(workdir),
        return_state=True,
    )


def test_second_run_is_served_from_the_cache(second_run):
    assert second_run.is_completed(), second_run.message
    states = task_states(second_run)
    cached = {name.rsplit("-", 1)[0]: s for name, s in states.items() if s == "Cached"}
    assert set(cached) == {"download", "augment"}, states


def artifacts_of(flow_state) -> dict[str, object]:
    """Artifact key -> artifact, for one flow run, read back through the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    run_id = flow_state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    return {a.key: a for a in found}


def parent_of(client: MlflowClient, flow_state):
    """The MLflow parent run a flow run made: the run tagged with its flow-run id."""
    flow_run_id = str(flow_state.state_details.flow_run_id)
    exp = client.get_experiment_by_name("fashion-mnist-cnn")
    (parent,) = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`prefect.flow_run_id` = '{flow_run_id}' "
        "and tags.flow = 'fashion-mnist-pipeline'",
    )
    return parent


def test_parent_holds_the_comparison(first_run, workdir):
    import csv
    import io

    client = MlflowClient(tracking_uri=workdir["tracking.tracking_uri"])
    parent = parent_of(client, first_run)
    files = {f.path for f in client.list_artifacts(parent.info.run_id, "comparison")}
    assert files == {
        "comparison/comparison.csv",
        "comparison/comparison.md",
        "comparison/pairs.csv",
        "comparison/pairs.md",
        "comparison/test_accuracy_vs_chapter.png",
        "comparison/val_accuracy.png",
    }
    text = Path(
        client.download_artifacts(parent.info.run_id, "comparison/comparison.csv")
    ).read_text()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["model"] for r in rows] == list(REGISTRY)
    summary = first_run.result()
    for row in rows:
        assert float(row["test_accuracy"]) == pytest.approx(summary[row["model"]])
        low, high = float(row["ci_low"]), float(row["ci_high"])
        assert low < float(row["test_accuracy"]) < high
        assert parent.data.metrics[f"test_accuracy_ci_low.{row['model']}"] == pytest.approx(low)
        assert float(row["chapter_accuracy"]) == REGISTRY[row["model"]].chapter_test_accuracy
        assert int(row["params"]) == REGISTRY[row["model"]].chapter_params
        assert int(row["epochs"]) == 2
    # The six pairs, each paired on the same 500 images (McNemar, Holm-corrected at 0.05).
    text = Path(client.download_artifacts(parent.info.run_id, "comparison/pairs.csv")).read_text()
    pairs = list(csv.DictReader(io.StringIO(text)))
    names = list(REGISTRY)
    assert [(p["a"], p["b"]) for p in pairs] == [
        (a, b) for i, a in enumerate(names) for b in names[i + 1 :]
    ]
    for p in pairs:
        difference = (int(p["a_only"]) - int(p["b_only"])) / 500
        assert float(p["difference"]) == pytest.approx(difference)
        assert difference == pytest.approx(summary[p["a"]] - summary[p["b"]])
        assert float(p["diff_low"]) <= float(p["difference"]) <= float(p["diff_high"])
        assert float(p["p_value"]) <= float(p["p_holm"]) <= 1.0
        assert p["significant"] == str(float(p["p_holm"]) < 0.05)
    # Every child describes itself, and all four carry the same param keys.
    children = [
        r
        for r in runs_of(client, "fashion-mnist-cnn")
        if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    ]
    for child in children:
        note = child.data.tags["mlflow.note.content"]
        assert f"### {child.info.run_name}" in note and "the chapter reports" in note
    assert len({frozenset(c.data.params) for c in children}) == 1
    # The same metric keys on all four, and system metrics (CPU, memory) on each.
    keys = [{k for k in c.data.metrics if not k.startswith("system/")} for c in children]
    assert all(k == keys[0] for k in keys)
    for child in children:
        assert "system/cpu_utilization_percentage" in child.data.metrics, child.info.run_name
        assert "system/system_memory_usage_megabytes" in child.data.metrics


def test_prefect_artifacts_table_links_and_progress(first_run, workdir):
    artifacts = artifacts_of(first_run)
    table = artifacts["model-comparison"]
    assert table.type == "table"
    data = table.data if isinstance(table.data, list) else json.loads(table.data)
    assert [row["model"] for row in data] == list(REGISTRY)
    assert all(row["ci_low"] < row["test_accuracy"] < row["ci_high"] for row in data)
    pairs = artifacts["model-pairs"]
    assert pairs.type == "table"
    rows = pairs.data if isinstance(pairs.data, list) else json.loads(pairs.data)
    assert len(rows) == 6 and {"a_only", "b_only", "p_holm", "significant"} <= set(rows[0])
    links = artifacts["mlflow-run"]
    assert links.type == "markdown"
    assert "McNemar" in links.data and "| a | b | difference |" in links.data
    client = MlflowClient(tracking_uri=workdir["tracking.tracking_uri"])
    assert parent_of(client, first_run).info.run_id in links.data
    for model in REGISTRY:
        progress = artifacts[f"training-{model.replace('_', '-')}"]
        assert progress.type == "progress"
        assert float(progress.data) == 100.0


def test_champion_then_challenger_or_new_champion(first_run, second_run, workdir):
    client = MlflowClient(tracking_uri=workdir["tracking.tracking_uri"])
    first = parent_of(client, first_run)
    assert first.data.tags["champion.alias"] == "champion"  # an empty registry
    assert first.data.tags["champion.previous_version"] == "none"
    summary = first_run.result()
    assert first.data.tags["champion.model"] == max(summary, key=summary.get)
    first_version = first.data.tags["champion.registered_version"]

    second = parent_of(client, second_run)
    candidate = second.data.metrics["champion.candidate_test_accuracy"]
    current = second.data.metrics["champion.current_test_accuracy"]
    tags = second.data.tags
    assert tags["champion.previous_version"] == first_version
    new_version = tags["champion.registered_version"]
    champion = client.get_model_version_by_alias("fashion-mnist-cnn", "champion")
    # Paired on the same 500 images: the champion moves only if the challenger is better
    # and McNemar's p is below the level; the tags say which, with the counts.
    assert tags["promotion.rule"] == "paired" and tags["promotion.level"] == "0.05"
    assert tags["promotion.test_set"].endswith("its own run was tested on the same images")
    mine, theirs = map(int, re.findall(r"\d+", tags["promotion.discordant"]))
    assert (mine - theirs) / 500 == pytest.approx(candidate - current)
    assert float(tags["promotion.difference"]) == pytest.approx(candidate - current, abs=1e-4)
    if candidate > current and float(tags["promotion.p_value"]) < 0.05:
        assert tags["champion.alias"] == "champion" == tags["promotion.outcome"]
        assert str(champion.version) == new_version
    else:
        assert second.data.tags["champion.alias"] == "challenger"
        assert str(champion.version) == first_version
        challenger = client.get_model_version_by_alias("fashion-mnist-cnn", "challenger")
        assert str(challenger.version) == new_version


def test_predict_with_the_champion(first_run, workdir, tmp_path):
    import numpy as np
    from PIL import Image

    from fmnist.stages.download import fetch_all
    from fmnist.stages.load import load_dataset

    ds = load_dataset(
        fetch_all(workdir["data.sources"], Path(workdir["data.cache_dir"])), test_subset=3
    )
    for i in range(2):
        Image.fromarray((ds.x_test[i, ..., 0] * 255).astype(np.uint8)).save(tmp_path / f"{i}.png")
    Image.fromarray((ds.x_test[0, ..., 0] * 255).astype(np.uint8)).resize((56, 56)).save(
        tmp_path / "big.png"
    )
    (tmp_path / "broken.png").write_text("not an image")
    files = [tmp_path / "0.png", tmp_path / "broken.png", tmp_path / "1.png", tmp_path / "big.png"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": workdir["tracking.tracking_uri"]}
    proc = subprocess.run(
        [sys.executable, "-m", "fmnist.flows.cli", "predict", *map(str, files)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]  # one file was unreadable
    assert "broken.png: cannot read image" in proc.stderr
    assert "56x56 resized to 28x28" in proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [str(files[0]), str(files[2]), str(files[3])]
    from fmnist.stages.load import CLASS_NAMES

    for line in lines:
        name, prob = line.split(": ", 1)[1].rsplit(" (", 1)
        assert name in CLASS_NAMES and 0.0 < float(prob.rstrip(")")) <= 1.0


@pytest.fixture
def own_workdir(tmp_path, debian_dir) -> dict[str, object]:
    """A store and data folders of this test's own: what it deletes, nobody else reads."""
    return {**folders(tmp_path, debian_dir), "tracking.registered_model": None}


def test_failing_model_fails_the_run_and_keeps_the_others(harness, own_workdir, monkeypatch):
    """A model that cannot be built: its child and the parent end FAILED with the reason,
    the other model still trains and is logged; a stale augment cache is recomputed."""
    from fmnist.flows.pipeline import fashion_mnist_pipeline

    def broken(name: str):
        raise RuntimeError("this model cannot be built")

    monkeypatch.setitem(REGISTRY, "broken", ModelSpec("broken", broken, "fails on purpose", 1, 0.5))
    # No floor: smoke's vgg_augmented alone may score below 0.30, which would fail the run
    # for want of a usable model (NoUsableModel), not for what this test is about.
    own_workdir = {**own_workdir, "tracking.promotion_floor": 0.0}
    first = fashion_mnist_pipeline(
        profile="smoke", models=["vgg_augmented"], overrides=own_workdir, return_state=True
    )
    assert first.is_completed(), first.message
    shutil.rmtree(own_workdir["data.prepared_dir"])  # the augment cache now points at nothing
    state = fashion_mnist_pipeline(
        profile="smoke",
        models=["broken", "vgg_augmented"],
        overrides=own_workdir,
        return_state=True,
    )
    assert state.is_failed()
    assert "broken: RuntimeError: this model cannot be built" in state.message
    states = task_states(state)
    augment_runs = sorted(s for name, s in states.items() if name.startswith("augment-"))
    # The cache hit pointed at a deleted file, so the task ran again with refresh_cache.
    assert augment_runs == ["Cached", "Completed"], states

    client = MlflowClient(tracking_uri=own_workdir["tracking.tracking_uri"])
    parent = parent_of(client, state)
    children = {
        r.info.run_name: r
        for r in runs_of(client, "fashion-mnist-cnn")
        if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
    assert set(children) == {"broken", "vgg_augmented"}
    assert children["broken"].info.status == "FAILED"
    assert "cannot be built" in children["broken"].data.tags["failure_reason"]
    assert children["vgg_augmented"].info.status == "FINISHED"
    assert "test_accuracy" in children["vgg_augmented"].data.metrics
    assert parent.info.status == "FAILED"
    assert "broken" in parent.data.tags["failure_reason"]
    assert Path(own_workdir["data.prepared_dir"]).is_dir()  # augmented again


def test_a_run_with_no_usable_model_fails_after_saying_why(harness, own_workdir):
    """Issue 17: a run none of whose models passes the floor is not a success (exit 1 from
    the CLI, a failed run in the dashboard), and the parent's tags say why."""
    from fmnist.flows.pipeline import fashion_mnist_pipeline

    overrides = {**own_workdir, "tracking.promotion_floor": 0.99}
    state = fashion_mnist_pipeline(
        profile="smoke", models=["pool_dropout"], overrides=overrides, return_state=True
    )
    assert state.is_failed()
    assert "NoUsableModel" in state.message and "below the floor 0.9900" in state.message
    client = MlflowClient(tracking_uri=own_workdir["tracking.tracking_uri"])
    parent = parent_of(client, state)
    assert parent.info.status == "FAILED"
    assert parent.data.tags["promotion.decision"] == "none"
    assert "pool_dropout scores" in parent.data.tags["promotion.reason"]
    assert parent.data.tags["failure_reason"].startswith("NoUsableModel: nothing registered")


def test_every_run_traces_back_to_its_commit_flow_run_and_config(first_run, workdir):
    client = MlflowClient(tracking_uri=workdir["tracking.tracking_uri"])
    parent = parent_of(client, first_run)
    children = [
        r
        for r in runs_of(client, "fashion-mnist-cnn")
        if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    ]
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    flow_run_id = str(first_run.state_details.flow_run_id)
    for run in [parent, *children]:
        tags = run.data.tags
        assert tags["mlflow.source.git.commit"] == head
        assert tags["git.dirty"] in ("True", "False")
        assert tags["prefect.flow_run_id"] == flow_run_id
        assert tags["prefect.flow_run_url"].endswith(f"/flow-runs/flow-run/{flow_run_id}")
        assert tags["mlflow.source.type"] == "LOCAL"  # not made by a deployment
        assert tags["dataset_digest"] == parent.data.params["dataset_digest"]
        assert len(tags["config_digest"]) == 64
    assert parent.data.tags["mlflow.source.name"] == "flows/pipeline.py:fashion_mnist_pipeline"
    assert {c.data.tags["config_digest"] for c in children} == {parent.data.tags["config_digest"]}
    # The registered champion carries the same provenance, and `fmnist lineage` prints it.
    version = client.get_model_version_by_alias("fashion-mnist-cnn", "champion")
    assert version.tags["prefect.flow_run_id"] == flow_run_id
    assert version.tags["mlflow.source.git.commit"] == head
    assert version.tags["parent_run_id"] == parent.info.run_id
    proc = subprocess.run(
        [sys.executable, "-m", "fmnist.flows.cli", "lineage", "models:/fashion-mnist-cnn@champion"],
        env={**os.environ, "MLFLOW_TRACKING_URI": workdir["tracking.tracking_uri"]},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in proc.stdout.splitlines())
    assert rows["model"] == f"fashion-mnist-cnn version {version.version}"
    assert rows["pipeline run"].startswith(parent.info.run_id)
    assert rows["git commit"] == head
    assert rows["prefect flow run"] == flow_run_id
    assert rows["config digest"] == parent.data.tags["config_digest"]


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
        "fmnist.flows.cli",
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
