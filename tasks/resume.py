"""Resume: a pipeline run that stopped before it finished goes on where it stopped, in the
same MLflow runs, from each model's last checkpoint; and no run is left RUNNING behind a
process that died.

What a pipeline run meets, in order:
- `pipeline_run(...)`, the one step the flow enters: reclaims first (the `reclaim-runs`
  task: runs whose process died are ended, or picked to go on), then opens the parent run
  (new, or the one picked, RUNNING again) and holds its ownership lock for its whole life;
- `run.model(name)` for each model: the model's earlier run under that parent (finished:
  not trained again; cut short: reopened) and its checkpoint folder (stages/checkpoint.py
  writes it after every epoch; stages/train.py restores from it);
- at the end, the checkpoints go if the run FINISHED; any other end keeps them, and the
  parent's children still RUNNING are ended with it.

A run is picked to go on when it has the same resolved config and data (their digests),
its folder is on this machine, and it did not finish: it was killed, it failed (its
finished models are kept, the others trained again), or its process died. `fresh` picks
none, and abandons those it would have picked for good (tagged, checkpoints removed).
Ownership: the process that owns a run holds an exclusive flock on `<folder>/owner.lock`;
the kernel drops it however the process ends, so a lock that can be taken means nobody is
behind the run any more.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from fmnist.tasks import keys
from fmnist.tasks.train import TrainingOutcome
from fmnist.tracking import Tracker
from fmnist.tracking import keys as tracking_keys
from fmnist.tracking.provenance import CONFIG_DIGEST, DATASET_DIGEST, FLOW_RUN_ID

LOCK_FILE = "owner.lock"
EARLIER_FLOW_RUNS = "prefect.earlier_flow_run_ids"
ABANDONED = "resume.abandoned"  # set on a run `fresh` chose not to go on with
UNFINISHED = ("RUNNING", "KILLED", "FAILED")


class RunOwned(RuntimeError):
    """Another live process owns the run."""


# -- ownership ---------------------------------------------------------------------------------


@contextmanager
def own(folder: Path) -> Iterator[None]:
    """Hold the run's ownership lock for the duration of the block; RunOwned if taken.

    The folder (the run's checkpoints with the lock) is removed when the block ends
    normally; any other end keeps it, so the run can go on from its checkpoints.
    """
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunOwned(f"{folder}: the run is owned by a live process") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # closing drops the lock
    shutil.rmtree(folder, ignore_errors=True)  # finished: nothing to go on from


def orphaned(folder: Path) -> bool:
    """True if folder records a run whose owning process is gone (its lock is free)."""
    path = folder / LOCK_FILE
    if not path.is_file():
        return False  # not a run of this machine: nothing can be told
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


# -- the reclaim-runs task ---------------------------------------------------------------------


def crash_flow_run(flow_run_id: str, reason: str) -> bool:
    """Mark a Prefect flow run that still says Running as Crashed; True if it was."""
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    with get_client(sync_client=True) as client:
        try:
            state = client.read_flow_run(flow_run_id).state
        except Exception:  # another API (a server since gone, another PREFECT_HOME)
            return False
        if state is None or not state.is_running():
            return False
        client.set_flow_run_state(flow_run_id, Crashed(message=reason), force=True)
        return True


def end_children(tracker: Tracker, parent_id: str, reason: str) -> list[str]:
    """End a parent's children that still say RUNNING (KILLED, with the reason); their ids."""
    ended = []
    for child in tracker.find_runs(
        f"tags.`{tracking_keys.PARENT}` = '{parent_id}' and attributes.status = 'RUNNING'"
    ):
        tracker.end_run(child.info.run_id, killed=True, reason=reason)
        ended.append(child.info.run_id)
    return ended


@dataclass(frozen=True)
class Candidate:
    """A pipeline run found unfinished, and whether its process is gone."""

    run: Any
    dead: bool  # RUNNING in MLflow, but nobody holds its lock


def _unfinished(tracker: Tracker, root: Path, flow: str) -> list[Candidate]:
    runs = tracker.find_runs(f"tags.{keys.FLOW} = '{flow}'")
    out = []
    for run in runs:  # newest first
        status = run.info.status
        if status == "RUNNING":
            if orphaned(root / run.info.run_id):
                out.append(Candidate(run, dead=True))
        elif status in UNFINISHED and ABANDONED not in run.data.tags:
            out.append(Candidate(run, dead=False))
    return out


def _sweep(tracker: Tracker, root: Path) -> None:
    """Remove checkpoint folders of runs of this store that finished or were abandoned."""
    if not root.is_dir():
        return
    for folder in root.iterdir():
        if not folder.is_dir() or not orphaned(folder):
            continue
        try:
            run = tracker.get_run(folder.name)
        except Exception:  # a run of another store or experiment: not ours to judge
            continue
        if run.info.status == "FINISHED" or ABANDONED in run.data.tags:
            shutil.rmtree(folder, ignore_errors=True)


@task(name="reclaim-runs", cache_policy=NO_CACHE)
def reclaim(
    tracker: Tracker,
    checkpoint_root: str,
    digests: Mapping[str, str],
    flow: str,
    fresh: bool = False,
) -> str | None:
    """End the runs whose process died; return the id of the run to go on with, if any.

    digests: the config and dataset digests (provenance tags) a run must share to be
    resumed. With `fresh`, none is resumed and those that could have been are abandoned.
    """
    logger = get_run_logger()
    if left := tracker.log.flush_all():  # writes an earlier run kept while the server was away
        logger.warning("%d runs still have writes in the spool (server away?)", len(left))
    root = Path(checkpoint_root)
    found = _unfinished(tracker, root, flow)
    matching = [
        c
        for c in found
        if all(c.run.data.tags.get(k) == v for k, v in digests.items())
        and (root / c.run.info.run_id).is_dir()
    ]
    resume = None if fresh or not matching else matching[0].run.info.run_id
    reason = "its process died (no owner holds its lock); found by a later pipeline run"
    for c in found:
        run_id = c.run.info.run_id
        if c.dead and run_id != resume:
            end_children(tracker, run_id, reason)
            tracker.end_run(run_id, killed=True, reason=reason)
            logger.warning("run %s: %s; ended KILLED", run_id, reason)
        if c.dead and (flow_run_id := c.run.data.tags.get(FLOW_RUN_ID)):
            crash_flow_run(flow_run_id, reason)  # that process is gone, whatever comes next
        if not c.dead and run_id != resume:
            end_children(tracker, run_id, f"its pipeline run ended {c.run.info.status}")
    if fresh:
        for c in matching:
            tracker.log.tags(c.run.info.run_id, {ABANDONED: "fresh run asked for"})
            shutil.rmtree(root / c.run.info.run_id, ignore_errors=True)
            logger.info("run %s abandoned: a fresh run was asked for", c.run.info.run_id)
    _sweep(tracker, root)
    if resume:
        status = next(c.run.info.status for c in matching if c.run.info.run_id == resume)
        logger.info("resuming run %s (%s before): same config and data", resume, status)
    return resume


# -- the run the flow enters -------------------------------------------------------------------


@dataclass(frozen=True)
class ModelResume:
    """What one model of a pipeline run starts from."""

    model: str
    checkpoints: Path  # its per-epoch checkpoints (and where a cut-short fit resumes from)
    earlier_run: Any | None = None  # its run under this parent from an earlier attempt

    @property
    def outcome(self) -> TrainingOutcome | None:
        """The earlier attempt's outcome if it finished and was scored: nothing to redo."""
        run = self.earlier_run
        if run is None or run.info.status != "FINISHED":
            return None
        accuracy = run.data.metrics.get(keys.TEST_ACCURACY)
        return None if accuracy is None else TrainingOutcome(self.model, run.info.run_id, accuracy)

    @property
    def reopen(self) -> str | None:
        """The run id to go on logging into, if an earlier attempt did not finish."""
        if self.earlier_run is None or self.outcome is not None:
            return None
        return self.earlier_run.info.run_id


@dataclass(frozen=True)
class PipelineRun:
    """The parent run of a pipeline run: its id and where its models start from."""

    tracker: Tracker
    id: str
    checkpoint_root: Path
    resumed: bool = False

    def model(self, name: str, key: str | None = None) -> ModelResume:
        """Where model `name` starts from: its earlier run (if resumed) and checkpoints.
        key: its child run's name, where a parent trains a model once per seed."""
        key = key or name
        # By run_key tag, else run name (runs from before the tag are named by model).
        runs = self.tracker.child_runs(self.id, name_tag=keys.RUN_KEY) if self.resumed else {}
        return ModelResume(name, self.checkpoint_root / self.id / key, runs.get(key))


def parent_gone(tracker: Tracker, parent_run_id: str) -> str | None:
    """Why a training run should not start: its pipeline's MLflow run or Prefect flow run
    has ended (a crash, a failure, a restart of the stack); None while both still run."""
    status = tracker.get_run(parent_run_id).info.status
    if status != "RUNNING":
        return f"its pipeline run {parent_run_id} is {status}"
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    parent_flow_run = flow_run.get_parent_flow_run_id()
    if parent_flow_run is None:
        return None
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(parent_flow_run).state
    if state is not None and state.is_final():
        return f"its pipeline flow run {parent_flow_run} is {state.name}"
    return None


def earlier_flow_runs(tracker: Tracker, run_id: str) -> dict[str, str]:
    """A resumed run keeps the ids of the flow runs that worked on it before this one."""
    tags = tracker.get_run(run_id).data.tags
    ids = [i for i in tags.get(EARLIER_FLOW_RUNS, "").split(",") if i]
    if previous := tags.get(FLOW_RUN_ID):
        ids.append(previous)
    return {EARLIER_FLOW_RUNS: ",".join(ids)}


@contextmanager
def pipeline_run(
    tracker: Tracker,
    name: str,
    tags: Mapping[str, str],
    checkpoint_root: str,
    *,
    flow: str,
    fresh: bool = False,
) -> Iterator[PipelineRun]:
    """The parent run, new or picked up where an earlier attempt stopped, owned for the
    whole block; on any end but a normal one its children still RUNNING end with it."""
    digests = {k: tags[k] for k in (CONFIG_DIGEST, DATASET_DIGEST)}
    resume = reclaim(tracker, checkpoint_root, digests, flow, fresh)
    run_tags = dict(tags)
    if resume:
        run_tags |= earlier_flow_runs(tracker, resume)
    root = Path(checkpoint_root)
    with tracker.run(name, tags=run_tags, resume=resume) as parent:
        try:
            with own(root / parent):
                yield PipelineRun(tracker, parent, root, resumed=resume is not None)
        except BaseException as exc:
            end_children(tracker, parent, f"its pipeline run ended: {type(exc).__name__}")
            raise
