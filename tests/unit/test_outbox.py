"""The outbox (tracking/outbox.py): writes wait in the spool while the server is away,
without holding training up; a run that starts during the outage is created when it is
back; each spooled operation replays as it was written."""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

from fmnist.tracking import Tracker, open_tracker
from fmnist.tracking.spool import PLACEHOLDER, Spool
from tests.helpers import closed_port
from tests.standins import copy_store


@pytest.fixture(scope="module")
def store(migrated_db, tmp_path_factory) -> str:
    """One SQLite store for the module (a copy of the migrated one: see migrated_db)."""
    return copy_store(migrated_db, tmp_path_factory.mktemp("outbox"))


@pytest.fixture
def tracker(store, tmp_path, monkeypatch) -> Tracker:
    """A tracker on an experiment of this test's own (the server, when it is "back")."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return open_tracker(store, f"outbox-{uuid.uuid4().hex[:8]}", str(tmp_path / "artifacts"))


@pytest.fixture
def away(tracker, tmp_path) -> Tracker:
    """The same experiment through a server that is away (nobody listens on its port),
    MLflow's own retries left at their defaults (about a minute per refused request)."""
    uri = f"http://127.0.0.1:{closed_port()}"
    return Tracker(uri, tracker.experiment_id, tracker.experiment_name, str(tmp_path / "spool"))


def back(tracker: Tracker, away: Tracker) -> Tracker:
    """The server is back: the same store, reached with the spool of the outage."""
    return Tracker(
        tracker.tracking_uri, tracker.experiment_id, tracker.experiment_name, away.spool_dir
    )


def test_a_run_started_while_the_server_is_away_is_created_when_it_is_back(tracker, away):
    with tracker.run("pipeline") as parent:
        pass
    t0 = time.monotonic()
    child = away.start_run("vgg", parent_run_id=parent, tags={"model": "vgg"})
    for epoch in (1, 2):
        away.log.metrics(child, {"loss": 1.0 / epoch}, step=epoch)
    away.log.params(child, {"epochs": 2})
    away.end_run(child)
    # Four writes and a run's creation against a dead server: each checked by one health
    # request, none spending MLflow's retries in the training thread.
    assert time.monotonic() - t0 < 5
    assert child.startswith(PLACEHOLDER)
    assert away.log.spool.pending(child) == 5  # create, 2 epochs, params, end

    server = back(tracker, away)
    assert server.log.flush(child, force=True)
    real = server.log.resolve(child)
    assert real != child
    run = server.get_run(real)
    assert run.info.run_name == "vgg" and run.info.status == "FINISHED"
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert server.child_runs(parent)["vgg"].info.run_id == real
    assert server.metric_history(real, "loss") == pytest.approx([1.0, 0.5])
    # The process that made the run goes on under its placeholder: it reaches the real run.
    server.log.tags(child, {"later": "yes"})
    assert server.get_run(real).data.tags["later"] == "yes"


def test_a_flush_cut_short_after_the_creation_does_not_create_the_run_twice(tracker, away):
    child = away.start_run("conv_only")
    away.log.metrics(child, {"loss": 0.5})
    spool = away.log.spool
    server = back(tracker, away)
    server.log._create(child, spool.ops(child)[0]["args"])  # created, then the process died
    assert server.log.flush(child, force=True)  # the creation is not replayed again
    assert len(server.find_runs("attributes.run_name = 'conv_only'")) == 1  # this experiment


def test_while_away_a_runs_spool_is_tried_again_ever_more_rarely(tmp_path):
    spool = Spool(tmp_path)
    spool.append("r", "set_tags", {"tags": {}})
    waits = []
    for _ in range(7):
        spool.hold("r", 10, 300)
        waits.append(round(spool._hold("r")[1]))
    assert waits == [10, 20, 40, 80, 160, 300, 300]
    assert spool.held("r")


def test_flush_all_uploads_this_stores_runs_only(tracker, away, tmp_path):
    with tracker.run("mine") as mine:
        pass
    away.log.tags(mine, {"a": "1"})
    other = Spool(away.spool_dir, "sqlite:////elsewhere/mlflow.db")
    other.append("someone-elses", "set_tags", {"tags": {"b": "2"}})
    server = back(tracker, away)
    # The spool of the outage recorded the away URI: rewrite it as this store's (the same
    # server, reached again), as a run on that server would have written it.
    (server.log.spool.folder(mine) / "store").write_text(tracker.tracking_uri)
    assert server.log.flush_all() == []
    assert server.get_run(mine).data.tags["a"] == "1"
    assert other.pending("someone-elses") == 1  # not this store's: left alone


def test_a_spooled_model_comes_back_compiled(tracker, away, tmp_path, monkeypatch):
    import keras

    monkeypatch.chdir(tmp_path)
    with tracker.run("model") as run_id:
        pass
    model = keras.Sequential(
        [keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10, "softmax")]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    assert away.log.keras_model(run_id, model, np.zeros((2, 28, 28, 1), np.float32)) is None
    server = back(tracker, away)
    assert server.log.flush(run_id, force=True)
    uri = server.get_run(run_id).data.tags["model_uri"]
    version = server.registry.register(uri, "spooled")
    loaded = server.registry.load_keras_model(f"models:/spooled/{version}")
    # A champion uploaded from the spool scores like one logged live: compiled.
    loss, accuracy = loaded.evaluate(np.zeros((4, 28, 28, 1)), np.zeros(4), verbose=0)
    assert np.isfinite(loss) and 0 <= accuracy <= 1


def test_a_model_whose_logging_fails_part_way_leaves_no_half_written_file(
    tracker, tmp_path, monkeypatch
):
    import errno
    from pathlib import Path

    import keras
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    def disk_full(self, local_dir, artifact_path=None):
        # The model file arrives truncated, then the disk is full.
        dest = Path(self.artifact_dir) / (artifact_path or "")
        dest.mkdir(parents=True, exist_ok=True)
        for f in Path(local_dir).rglob("*.keras"):
            (dest / f.name).write_bytes(f.read_bytes()[:100])
        raise OSError(errno.ENOSPC, "No space left on device")

    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten()])
    monkeypatch.setattr(LocalArtifactRepository, "log_artifacts", disk_full)
    with pytest.raises(OSError, match="No space left"), tracker.run("full-disk") as run_id:
        tracker.log.keras_model(run_id, model, np.zeros((2, 28, 28, 1), np.float32))
    monkeypatch.undo()
    models = tracker.client.search_logged_models(experiment_ids=[tracker.experiment_id])
    assert not [m for m in models if m.source_run_id == run_id]  # deleted
    assert not list((tmp_path / "artifacts").rglob("*.keras"))  # nothing half-written left
    assert "model_uri" not in tracker.get_run(run_id).data.tags
