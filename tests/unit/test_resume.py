"""Resume in one place (tasks/resume.py): ownership locks, which unfinished run goes on, what
`fresh` abandons, children ended with their parents, leftover checkpoints swept."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from prefect.logging import disable_run_logger

from fmnist.flows import PIPELINE_FLOW
from fmnist.tasks import keys
from fmnist.tasks.resume import (
    ABANDONED,
    PipelineRun,
    RunOwned,
    end_children,
    orphaned,
    own,
    reclaim,
)
from fmnist.tracking import Tracker, open_tracker
from fmnist.tracking.provenance import CONFIG_DIGEST, DATASET_DIGEST
from tests.standins import copy_store

DIGESTS = {CONFIG_DIGEST: "c" * 64, DATASET_DIGEST: "d" * 64}


@pytest.fixture(scope="module")
def store(migrated_db, tmp_path_factory) -> str:
    """One SQLite store for the module (a copy of the migrated one: see migrated_db)."""
    return copy_store(migrated_db, tmp_path_factory.mktemp("resume"))


@pytest.fixture
def tracker(store, tmp_path, monkeypatch) -> Tracker:
    """A tracker on an experiment of this test's own."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return open_tracker(store, f"resume-{uuid.uuid4().hex[:8]}", str(tmp_path / "artifacts"))


def pipeline(tracker: Tracker, status: str, root: Path, digests=DIGESTS, keep=True) -> str:
    """A pipeline parent run ended with `status`, its checkpoint folder kept or not."""
    run_id = tracker.start_run("pipeline-smoke", tags={keys.FLOW: PIPELINE_FLOW, **digests})
    if status != "RUNNING":
        tracker.client.set_terminated(run_id, status)
    if keep:
        (root / run_id).mkdir(parents=True)
    return run_id


def reclaim_now(tracker: Tracker, root: Path, fresh: bool = False) -> str | None:
    with disable_run_logger():
        return reclaim.fn(tracker, str(root), DIGESTS, PIPELINE_FLOW, fresh)


def test_ownership_lock_tells_a_live_owner_from_a_dead_one(tmp_path):
    folder = tmp_path / "run"
    assert not orphaned(folder)  # never owned here: not judged
    with own(folder):
        assert not orphaned(folder)  # held (by this process, through another descriptor)
        with pytest.raises(RunOwned), own(folder):
            pass
        assert folder.is_dir()  # the refused second owner removed nothing
    assert not folder.exists()  # ended normally: nothing to resume, folder gone

    with pytest.raises(KeyboardInterrupt), own(folder):
        raise KeyboardInterrupt
    assert orphaned(folder)  # interrupted: kept, and nobody holds it
    with pytest.raises(ValueError), own(folder):
        raise ValueError("a model failed")
    assert orphaned(folder)  # failed: kept too, its finished models need not train again


@pytest.mark.parametrize("status", ["KILLED", "FAILED"])
def test_an_unfinished_run_with_the_same_config_and_data_goes_on(tracker, tmp_path, status):
    older = pipeline(tracker, status, tmp_path)
    newer = pipeline(tracker, status, tmp_path)
    assert reclaim_now(tracker, tmp_path) == newer  # the newest first
    assert older != newer


def test_a_finished_or_different_or_folderless_run_does_not_go_on(tracker, tmp_path):
    pipeline(tracker, "FINISHED", tmp_path)
    pipeline(tracker, "KILLED", tmp_path, digests={**DIGESTS, CONFIG_DIGEST: "x" * 64})
    pipeline(tracker, "KILLED", tmp_path, keep=False)  # its checkpoints are elsewhere
    assert reclaim_now(tracker, tmp_path) is None


def test_a_run_whose_process_died_is_resumed_or_ended(tracker, tmp_path):
    dead = pipeline(tracker, "RUNNING", tmp_path)
    other = pipeline(tracker, "RUNNING", tmp_path, digests={**DIGESTS, CONFIG_DIGEST: "x" * 64})
    (tmp_path / dead / "owner.lock").touch()  # nobody holds them: their processes are gone
    (tmp_path / other / "owner.lock").touch()
    child = tracker.start_run("vgg", parent_run_id=other, tags={keys.MODEL: "vgg"})
    assert reclaim_now(tracker, tmp_path) == dead
    assert tracker.get_run(dead).info.status == "RUNNING"  # left to the run that goes on
    assert tracker.get_run(other).info.status == "KILLED"
    assert tracker.get_run(child).info.status == "KILLED"  # ended with its parent


def test_a_live_run_is_left_alone(tracker, tmp_path):
    live = pipeline(tracker, "RUNNING", tmp_path)
    with own(tmp_path / live):
        assert reclaim_now(tracker, tmp_path) is None
        assert tracker.get_run(live).info.status == "RUNNING"


def test_fresh_abandons_for_good_what_it_did_not_resume(tracker, tmp_path):
    killed = pipeline(tracker, "KILLED", tmp_path)
    assert reclaim_now(tracker, tmp_path, fresh=True) is None
    assert tracker.get_run(killed).data.tags[ABANDONED]
    assert not (tmp_path / killed).exists()
    # The next plain run does not go back to it.
    assert reclaim_now(tracker, tmp_path) is None


def test_children_left_running_by_a_failed_parent_are_ended(tracker, tmp_path):
    failed = pipeline(tracker, "FAILED", tmp_path, digests={**DIGESTS, CONFIG_DIGEST: "x" * 64})
    child = tracker.start_run("vgg", parent_run_id=failed, tags={keys.MODEL: "vgg"})
    reclaim_now(tracker, tmp_path)
    run = tracker.get_run(child)
    assert run.info.status == "KILLED"
    assert "FAILED" in run.data.tags["failure_reason"]


def test_end_children_ends_only_running_children(tracker):
    parent = tracker.start_run("p")
    done = tracker.start_run("a", parent_run_id=parent)
    tracker.end_run(done)
    running = tracker.start_run("b", parent_run_id=parent)
    assert end_children(tracker, parent, "gone") == [running]
    assert tracker.get_run(done).info.status == "FINISHED"


def test_folders_of_finished_runs_are_swept_others_kept(tracker, tmp_path):
    finished = pipeline(tracker, "FINISHED", tmp_path)
    foreign = tmp_path / "not-a-run-of-this-store"
    foreign.mkdir()
    (foreign / "owner.lock").touch()
    (tmp_path / finished / "owner.lock").touch()
    reclaim_now(tracker, tmp_path)
    assert not (tmp_path / finished).exists()
    assert foreign.exists()


def test_a_model_finished_earlier_is_not_trained_again_one_cut_short_is_reopened(tracker, tmp_path):
    parent = pipeline(tracker, "KILLED", tmp_path)
    done = tracker.start_run("vgg", parent_run_id=parent, tags={keys.MODEL: "vgg"})
    tracker.log.metrics(done, {keys.TEST_ACCURACY: 0.9})
    tracker.end_run(done)
    cut = tracker.start_run("conv_only", parent_run_id=parent, tags={keys.MODEL: "conv_only"})
    tracker.end_run(cut, killed=True)
    run = PipelineRun(tracker, parent, tmp_path, resumed=True)
    vgg, conv = run.model("vgg"), run.model("conv_only")
    assert vgg.outcome is not None and vgg.outcome.test_accuracy == pytest.approx(0.9)
    assert vgg.reopen is None
    assert conv.outcome is None and conv.reopen == cut
    assert conv.checkpoints == tmp_path / parent / "conv_only"
    fresh = PipelineRun(tracker, parent, tmp_path, resumed=False).model("vgg")
    assert fresh.outcome is None and fresh.reopen is None  # not resumed: nothing looked up


def test_a_model_trained_once_per_seed_is_resumed_by_its_run_key(tracker, tmp_path):
    # A certificate trains each model once per seed under one parent: the model tag is the
    # same, the run key tells them apart.
    parent = pipeline(tracker, "FAILED", tmp_path)
    runs = {}
    for seed, end in ((42, "FINISHED"), (43, "KILLED")):
        key = f"vgg-seed{seed}"
        tags = {keys.MODEL: "vgg", keys.RUN_KEY: key, keys.SEED: seed}
        runs[seed] = tracker.start_run(key, parent_run_id=parent, tags=tags)
        tracker.log.metrics(runs[seed], {keys.TEST_ACCURACY: 0.5 + seed / 1000})
        tracker.end_run(runs[seed], killed=end == "KILLED")
    run = PipelineRun(tracker, parent, tmp_path, resumed=True)
    done, cut, new = (run.model("vgg", f"vgg-seed{s}") for s in (42, 43, 44))
    assert done.outcome is not None and done.outcome.run_id == runs[42]
    assert done.outcome.test_accuracy == pytest.approx(0.542) and done.model == "vgg"
    assert cut.outcome is None and cut.reopen == runs[43]
    assert cut.checkpoints == tmp_path / parent / "vgg-seed43"
    assert new.earlier_run is None and new.reopen is None
    assert run.model("vgg").earlier_run is None  # no run is keyed by the bare model name
