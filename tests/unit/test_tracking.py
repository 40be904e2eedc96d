"""The tracker: a run's life, batched logging, children, the registry, provenance."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tracking import PARENT_TAG, Tracker, _fluent_uri, open_tracker, resolve_tracking_uri
from tracking.provenance import (
    CONFIG_DIGEST,
    GIT_COMMIT,
    GIT_DIRTY,
    SOURCE_NAME,
    config_digest,
    git_state,
    lineage,
    provenance_tags,
)


@pytest.fixture
def tracker(tmp_path, monkeypatch) -> Tracker:
    """A tracker on a fresh SQLite store of this test's own."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return open_tracker(f"sqlite:///{tmp_path}/mlflow.db", "unit", str(tmp_path / "artifacts"))


def test_fluent_use_leaves_the_environment_as_it_was(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with _fluent_uri(f"sqlite:///{tmp_path}/a.db"):
        pass
    # MLflow's set_tracking_uri writes the variable; a later run must not inherit it.
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert resolve_tracking_uri("sqlite:///b.db") == "sqlite:///b.db"

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://server:5000")
    with _fluent_uri(f"sqlite:///{tmp_path}/a.db"):
        pass
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://server:5000"
    assert resolve_tracking_uri("sqlite:///b.db") == "http://server:5000"


def test_open_tracker_reuses_the_experiment(tracker, tmp_path):
    again = open_tracker(tracker.tracking_uri, "unit", str(tmp_path / "artifacts"))
    assert again.experiment_id == tracker.experiment_id
    other = open_tracker(tracker.tracking_uri, "other")
    assert other.experiment_id != tracker.experiment_id


def test_a_run_that_returns_is_finished(tracker):
    with tracker.run("ok", tags={"model": "vgg"}) as run_id:
        tracker.log_metrics(run_id, {"loss": 0.5}, step=1)
    run = tracker.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["model"] == "vgg"
    assert "failure_reason" not in run.data.tags


def test_a_run_that_raises_is_failed_with_the_reason_and_the_error_goes_on(tracker):
    with pytest.raises(ValueError, match="bad input"), tracker.run("broken") as run_id:
        raise ValueError("bad input")
    run = tracker.get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["failure_reason"] == "ValueError: bad input"


def test_an_interrupted_run_is_killed(tracker):
    with pytest.raises(KeyboardInterrupt), tracker.run("stopped") as run_id:
        raise KeyboardInterrupt
    assert tracker.get_run(run_id).info.status == "KILLED"


def test_children_are_found_by_model_under_their_parent_only(tracker):
    with tracker.run("parent") as parent, tracker.run("other-parent") as other:
        with tracker.run("a", parent_run_id=parent, tags={"model": "vgg"}) as child:
            tracker.log_metrics(child, {"test_accuracy": 0.9})
        with tracker.run("b", parent_run_id=other, tags={"model": "vgg"}):
            pass
        with tracker.run("conv_only", parent_run_id=parent):  # no model tag: the run name
            pass
    children = tracker.child_runs(parent)
    assert set(children) == {"vgg", "conv_only"}
    assert children["vgg"].info.run_id == child
    assert children["vgg"].data.tags[PARENT_TAG] == parent
    results = tracker.child_results(parent)
    assert results["vgg"] == (child, pytest.approx(0.9))
    assert results["conv_only"][1] is None


def test_more_than_a_hundred_params_and_long_values_are_logged(tracker):
    params = {f"p{i:03d}": i for i in range(250)} | {"long": "x" * 7000}
    with tracker.run("params") as run_id:
        tracker.log_params(run_id, params)
    logged = tracker.get_run(run_id).data.params
    assert len(logged) == 251
    assert logged["p249"] == "249"
    assert len(logged["long"]) == 6000  # cut to MLflow's limit, not rejected


def test_metric_history_is_in_step_order(tracker):
    with tracker.run("curve") as run_id:
        for step, value in [(3, 0.3), (1, 0.1), (2, 0.2)]:
            tracker.log_metrics(run_id, {"val_accuracy": value}, step=step)
    assert tracker.metric_history(run_id, "val_accuracy") == pytest.approx([0.1, 0.2, 0.3])


def test_links_point_at_the_runs_list_and_compare_view(tracker):
    ui = "http://127.0.0.1:5000/"
    eid = tracker.experiment_id
    assert tracker.experiment_url(ui) == f"http://127.0.0.1:5000/#/experiments/{eid}/runs"
    assert tracker.run_url(ui, "abc").endswith(f"/#/experiments/{eid}/runs/abc")
    compare = tracker.compare_url(ui, ["r1", "r2"])
    assert "#/compare-runs?runs=" in compare and "r1" in compare and "r2" in compare


def test_registry_versions_aliases_and_lineage(tracker, tmp_path, monkeypatch):
    import keras
    import numpy as np

    monkeypatch.chdir(tmp_path)  # where MLflow may write scratch files
    model = keras.Sequential(
        [keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)]
    )
    with tracker.run("pipeline", tags={"flow": "x", CONFIG_DIGEST: "c" * 64}) as parent:
        with tracker.run("tiny", parent_run_id=parent, tags={"model": "tiny"}) as child:
            tracker.log_metrics(child, {"test_accuracy": 0.75})
            uri = tracker.log_keras_model(child, model, np.zeros((2, 28, 28, 1), np.float32))
        assert tracker.alias_version("reg", "champion") is None  # no such model yet
        version = tracker.register(uri, "reg", tags={GIT_COMMIT: "abc123", "parent_run_id": parent})
        tracker.set_alias("reg", "champion", version)
    found = tracker.alias_version("reg", "champion")
    assert str(found.version) == version
    assert tracker.model_version("models:/reg@champion").version == found.version
    assert str(tracker.model_version(f"models:/reg/{version}").version) == version
    with pytest.raises(ValueError, match="not a registry URI"):
        tracker.model_version("runs:/abc/model")
    rows = dict(lineage(tracker, "models:/reg@champion"))
    assert rows["model"] == f"reg version {version}"
    assert rows["aliases"] == "champion"
    assert rows["model run"].startswith(child)
    assert rows["test accuracy"] == "0.7500"
    assert rows["pipeline run"].startswith(parent)
    assert rows["git commit"] == "abc123"  # from the version's tags
    assert rows["config digest"] == "c" * 64  # from the parent's tags
    assert rows["prefect flow run"] == "-"  # not made in a flow run


def test_config_digest_ignores_key_order_but_not_values():
    a = {"train": {"epochs": 2, "batch_size": 32}, "seed": 1}
    b = {"seed": 1, "train": {"batch_size": 32, "epochs": 2}}
    assert config_digest(a) == config_digest(b)
    assert config_digest(a) != config_digest({**a, "seed": 2})


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_git_state_names_the_commit_and_local_changes(tmp_path):
    assert git_state(tmp_path) == {}  # not a checkout: nothing claimed
    _git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "f.txt").write_text("one")
    _git(tmp_path, "add", "f.txt")
    _git(tmp_path, "-c", "user.email=a@b", "-c", "user.name=t", "commit", "-qm", "one")
    clean = git_state(tmp_path)
    assert clean[GIT_COMMIT] == _git(tmp_path, "rev-parse", "HEAD")
    assert clean[GIT_DIRTY] == "False"
    assert clean["mlflow.source.git.branch"] == "main"
    (tmp_path / "f.txt").write_text("two")
    assert git_state(tmp_path)[GIT_DIRTY] == "True"


def test_provenance_outside_a_flow_run_says_local_and_names_the_entrypoint():
    tags = provenance_tags("flows/x.py:f", {"seed": 1}, "d" * 64)
    assert tags[SOURCE_NAME] == "flows/x.py:f"
    assert tags["mlflow.source.type"] == "LOCAL"
    assert tags["dataset_digest"] == "d" * 64
    assert tags[CONFIG_DIGEST] == config_digest({"seed": 1})
    assert "prefect.flow_run_id" not in tags


def test_store_is_the_one_asked_for(tracker):
    client = MlflowClient(tracking_uri=tracker.tracking_uri)
    with tracker.run("here") as run_id:
        pass
    assert client.get_run(run_id).info.experiment_id == tracker.experiment_id
