"""The tracker: a run's life, batched logging, children, the registry, provenance."""

from __future__ import annotations

import getpass
import os
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from fmnist.tracking import Tracker, open_tracker, resolve_tracking_uri
from fmnist.tracking.client import fluent_uri
from fmnist.tracking.keys import PARENT
from fmnist.tracking.models import backend_requirements
from fmnist.tracking.provenance import (
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
def tracker(fresh_store, tmp_path, monkeypatch) -> Tracker:
    """A tracker on a fresh SQLite store of this test's own."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return open_tracker(fresh_store, "unit", str(tmp_path / "artifacts"))


def test_fluent_use_leaves_the_environment_as_it_was(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with fluent_uri(f"sqlite:///{tmp_path}/a.db"):
        pass
    # MLflow's set_tracking_uri writes the variable; a later run must not inherit it.
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert resolve_tracking_uri("sqlite:///b.db") == "sqlite:///b.db"

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://server:5000")
    with fluent_uri(f"sqlite:///{tmp_path}/a.db"):
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
        tracker.log.metrics(run_id, {"loss": 0.5}, step=1)
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


def test_an_error_raised_while_stopping_still_ends_the_run_killed(tracker):
    """A SIGTERM to the whole group stops the local API too: the flow's reports to it fail
    while the signal unwinds, and the run says it was stopped, not broken."""

    class TerminationSignal(BaseException):  # Prefect's carries the signal number
        signal = 15

    with pytest.raises(ConnectionError), tracker.run("stopped") as run_id:
        try:
            raise TerminationSignal
        except TerminationSignal:
            raise ConnectionError("the API went away") from None  # __context__ is kept
    run = tracker.get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["failure_reason"] == "TerminationSignal: SIGTERM"


def test_children_are_found_by_model_under_their_parent_only(tracker):
    with tracker.run("parent") as parent, tracker.run("other-parent") as other:
        with tracker.run("a", parent_run_id=parent, tags={"model": "vgg"}) as child:
            tracker.log.metrics(child, {"test_accuracy": 0.9})
        with tracker.run("b", parent_run_id=other, tags={"model": "vgg"}):
            pass
        with tracker.run("conv_only", parent_run_id=parent):  # no model tag: the run name
            pass
    children = tracker.child_runs(parent)
    assert set(children) == {"vgg", "conv_only"}
    assert children["vgg"].info.run_id == child
    assert children["vgg"].data.tags[PARENT] == parent
    assert children["vgg"].data.metrics["test_accuracy"] == pytest.approx(0.9)


def test_more_than_a_hundred_params_and_long_values_are_logged(tracker):
    params = {f"p{i:03d}": i for i in range(250)} | {"long": "x" * 7000}
    with tracker.run("params") as run_id:
        tracker.log.params(run_id, params)
    logged = tracker.get_run(run_id).data.params
    assert len(logged) == 251
    assert logged["p249"] == "249"
    assert len(logged["long"]) == 6000  # cut to MLflow's limit, not rejected


def test_metric_history_is_in_step_order(tracker):
    with tracker.run("curve") as run_id:
        for step, value in [(3, 0.3), (1, 0.1), (2, 0.2)]:
            tracker.log.metrics(run_id, {"val_accuracy": value}, step=step)
    assert tracker.metric_history(run_id, "val_accuracy") == pytest.approx([0.1, 0.2, 0.3])


def test_links_point_at_the_runs_list_and_compare_view(tracker):
    ui = "http://127.0.0.1:5000/"
    eid = tracker.experiment_id
    assert tracker.links(ui).experiment() == f"http://127.0.0.1:5000/#/experiments/{eid}/runs"
    assert tracker.links(ui).run("abc").endswith(f"/#/experiments/{eid}/runs/abc")
    compare = tracker.links(ui).compare(["r1", "r2"])
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
            tracker.log.metrics(child, {"test_accuracy": 0.75})
            uri = tracker.log.keras_model(child, model, np.zeros((2, 28, 28, 1), np.float32))
        assert tracker.registry.alias_version("reg", "champion") is None  # no such model yet
        version = tracker.registry.register(
            uri, "reg", tags={GIT_COMMIT: "abc123", "parent_run_id": parent}
        )
        tracker.registry.set_alias("reg", "champion", version)
    found = tracker.registry.alias_version("reg", "champion")
    assert str(found.version) == version
    assert tracker.registry.model_version("models:/reg@champion").version == found.version
    assert str(tracker.registry.model_version(f"models:/reg/{version}").version) == version
    with pytest.raises(ValueError, match="not a registry URI"):
        tracker.registry.model_version("runs:/abc/model")
    rows = dict(lineage(tracker, "models:/reg@champion", "test_accuracy"))
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
    assert tags["mlflow.user"] == getpass.getuser()  # who ran it: the UI's User column


def test_store_is_the_one_asked_for(tracker):
    client = MlflowClient(tracking_uri=tracker.tracking_uri)
    with tracker.run("here") as run_id:
        pass
    assert client.get_run(run_id).info.experiment_id == tracker.experiment_id


@pytest.fixture
def offline(tmp_path, monkeypatch) -> Tracker:
    """A tracker whose server is away (a closed port), with a spool, failing fast."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nobody listens there
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    return Tracker(f"http://127.0.0.1:{port}", "0", "offline", str(tmp_path / "spool"))


def test_writes_while_the_server_is_away_wait_in_order_then_upload_in_full(
    tracker, offline, tmp_path, monkeypatch
):
    import keras
    import numpy as np
    from matplotlib.figure import Figure

    from fmnist.tracking import TrackingSpooled

    monkeypatch.chdir(tmp_path)
    with tracker.run("child", tags={"model": "tiny"}) as run_id:
        pass  # the run exists in the store; the writes below happen during an outage
    fig = Figure()
    fig.subplots().plot([1, 2])
    model = keras.Sequential(
        [keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)]
    )
    for epoch in (1, 2, 3):
        offline.log.metrics(run_id, {"loss": 1.0 / epoch}, step=epoch)  # no error raised
    offline.log.params(run_id, {"epochs": 3})
    offline.log.text(run_id, "report", "report.txt")
    offline.log.dict(run_id, {"matrix": [[1, 0], [0, 1]]}, "confusion.json")
    offline.log.figure(run_id, fig, "plots/curve.png")
    assert offline.log.keras_model(run_id, model, np.zeros((2, 28, 28, 1), np.float32)) is None
    offline.end_run(run_id)
    assert offline.log.spool.pending(run_id) == 9  # 3 epochs, params, 3 artifacts, model, end
    with pytest.raises(TrackingSpooled, match=r"9 writes .* `fmnist spool upload"):
        offline.log.raise_if_spooled(run_id)  # what Tracker.run does when a run ends

    # The server is back (here: the same store through a tracker that reaches it).
    back = Tracker(tracker.tracking_uri, tracker.experiment_id, "unit", offline.spool_dir)
    assert back.log.flush(run_id, force=True)
    assert back.log.spool.pending(run_id) == 0 and not back.log.spool.runs()
    run = back.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert back.logged_steps(run_id, "loss") == [1, 2, 3]
    assert back.metric_history(run_id, "loss") == pytest.approx([1.0, 0.5, 1 / 3])
    assert run.data.params["epochs"] == "3"
    client = MlflowClient(tracking_uri=tracker.tracking_uri)
    files = {f.path for f in client.list_artifacts(run_id)} | {
        f.path for f in client.list_artifacts(run_id, "plots")
    }
    assert {"report.txt", "confusion.json", "plots/curve.png"} <= files
    assert run.data.tags["model_uri"].startswith("models:/")
    loaded = back.registry.load_keras_model(run.data.tags["model_uri"])
    assert loaded.count_params() == model.count_params()


def test_without_a_spool_an_unreachable_server_is_an_error(offline):
    bare = Tracker(offline.tracking_uri, "0", "offline")
    with pytest.raises(Exception, match=r"127\.0\.0\.1"):
        bare.log.metrics("run", {"loss": 1.0})


def test_system_metrics_land_on_the_given_run(tmp_path, fresh_store):
    tracker = open_tracker(fresh_store, "sysmetrics", str(tmp_path / "a"))
    run_id = tracker.start_run("busy")
    with tracker.system_metrics(run_id, interval_s=0.2):
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:  # some CPU work to sample
            sum(i * i for i in range(10_000))
    tracker.end_run(run_id)
    metrics = tracker.client.get_run(run_id).data.metrics
    for key in (
        "system/cpu_utilization_percentage",
        "system/system_memory_usage_megabytes",
        "system/system_memory_usage_percentage",
    ):
        assert key in metrics, sorted(metrics)
    assert 0 < metrics["system/system_memory_usage_percentage"] <= 100
    # One step per interval: a block of 1.5 s sampled every 0.2 s gives several.
    assert len(tracker.client.get_metric_history(run_id, "system/cpu_utilization_percentage")) >= 2


def test_system_metrics_interval_zero_records_nothing(tmp_path, fresh_store):
    tracker = open_tracker(fresh_store, "sysmetrics", str(tmp_path / "a"))
    run_id = tracker.start_run("quiet")
    with tracker.system_metrics(run_id, interval_s=0):
        time.sleep(0.3)
    tracker.end_run(run_id)
    assert not any(k.startswith("system/") for k in tracker.client.get_run(run_id).data.metrics)


def test_a_logged_model_requires_the_backend_it_was_trained_on():
    import keras

    packages = {r.split("==")[0] for r in backend_requirements()}
    expected = {"tensorflow": {"tensorflow"}, "jax": {"jax", "jaxlib"}, "torch": {"torch"}}
    assert packages == expected[keras.backend.backend()]


def test_a_text_artifact_is_read_back_or_none(tracker):
    with tracker.run("r") as run_id:
        tracker.log.text(run_id, "index,label,predicted\n0,1,1\n", "predictions.csv")
        tracker.log.text(run_id, "| a |\n", "comparison/pairs.md")
    assert tracker.artifact_text(run_id, "predictions.csv") == "index,label,predicted\n0,1,1\n"
    assert tracker.artifact_text(run_id, "comparison/pairs.md") == "| a |\n"
    assert tracker.artifact_text(run_id, "summary.json") is None
    assert tracker.artifact_text(run_id, "nowhere/pairs.md") is None
    assert tracker.artifact_text(run_id, "comparison") is None  # a folder is not a file
