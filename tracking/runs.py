"""The tracker: a handle on one store and experiment, and the life of its runs.

Every call names its run id explicitly. MLflow's "active run" is thread-local, and Prefect
runs tasks in worker threads (and, later, in other processes and on other machines), so the
fluent API's implicit run would attach metrics to the wrong run or to none. Writes go
through `tracker.log` (tracking/writes.py: kept in the spool while the server is away), the
registry through `tracker.registry`, UI links through `tracker.links(ui)`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException

from fmnist.tracking import keys
from fmnist.tracking.client import BoundedClient, unreachable
from fmnist.tracking.links import Links
from fmnist.tracking.registry import Registry
from fmnist.tracking.spool import PLACEHOLDER
from fmnist.tracking.writes import Writer


@dataclass(frozen=True)
class Tracker:
    """A handle on one tracking store and experiment; cheap to copy into any thread."""

    tracking_uri: str
    experiment_id: str
    experiment_name: str
    spool_dir: str | None = None  # where writes wait while the server is away (None: raise)

    @property
    def client(self) -> BoundedClient:
        """A bounded client bound to this tracker's store (not to the process-wide default)."""
        return BoundedClient(self.tracking_uri)

    @property
    def log(self) -> Writer:
        """Writes to this store's runs (metrics, params, tags, artifacts, models)."""
        return Writer(self.tracking_uri, self.spool_dir)

    @property
    def registry(self) -> Registry:
        """This store's model registry."""
        return Registry(self.tracking_uri)

    def links(self, ui: str) -> Links:
        """Links to this experiment's pages in the MLflow UI at `ui`."""
        return Links(ui, self.experiment_id)

    # -- a run's life -----------------------------------------------------------------------

    def start_run(
        self,
        name: str,
        *,
        parent_run_id: str | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> str:
        """Create a run (nested under parent_run_id if given) and return its id."""
        all_tags = {k: str(v) for k, v in (tags or {}).items()}
        if parent_run_id:
            all_tags[keys.PARENT] = self.log.resolve(parent_run_id)
        outbox = self.log
        if outbox.spool is not None and not outbox.reachable():
            # The server is away: the run is made when it is back (tracking/outbox.py).
            return outbox.defer_run(self.experiment_id, name, all_tags)
        try:
            run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        except Exception as exc:
            if outbox.spool is None or not unreachable(exc):
                raise
            return outbox.defer_run(self.experiment_id, name, all_tags)
        return run.info.run_id

    def end_run(
        self, run_id: str, *, failed: bool = False, reason: str | None = None, killed: bool = False
    ) -> None:
        """Mark a run FINISHED, FAILED or KILLED; a failure's reason is kept as a tag."""
        if reason:
            self.log.tags(run_id, {keys.FAILURE_REASON: reason[: keys.MAX_TAG_LENGTH]})
        status = RunStatus.KILLED if killed else RunStatus.FAILED if failed else RunStatus.FINISHED
        self.log.terminated(run_id, RunStatus.to_string(status))

    @contextmanager
    def run(
        self,
        name: str,
        *,
        parent_run_id: str | None = None,
        tags: Mapping[str, Any] | None = None,
        resume: str | None = None,
    ) -> Iterator[str]:
        """A run's whole life: created on entry (its id is yielded), FINISHED on a normal exit,
        FAILED with the reason on an exception, KILLED on an interrupt; the exception goes on.

        With resume=RUN_ID that run is reopened (RUNNING again, its history kept) instead.
        """
        if resume:
            self.reopen(resume, tags)
            run_id = resume
        else:
            run_id = self.start_run(name, parent_run_id=parent_run_id, tags=tags)
        try:
            yield run_id
        except Exception as exc:
            if (stop := stopped_by(exc)) is not None:  # a cleanup failed while we stopped
                self.end_run(run_id, killed=True, reason=stop_reason(stop))
                raise
            reason = f"{type(exc).__name__}: {exc}"
            if unreachable(exc):
                reason = f"tracking server {self.tracking_uri} unreachable: {reason}"
            self.end_run(run_id, failed=True, reason=reason)
            self.log.raise_if_spooled(run_id, exc)
            raise
        except BaseException as exc:  # KeyboardInterrupt, SystemExit: stopped, not broken
            self.end_run(run_id, killed=True, reason=stop_reason(exc))
            raise
        self.end_run(run_id)
        self.log.raise_if_spooled(run_id)

    def reopen(self, run_id: str, tags: Mapping[str, Any] | None = None) -> None:
        """Make an ended (or orphaned) run RUNNING again, to go on logging into it."""
        self.client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
        if tags:
            self.log.tags(run_id, tags)
        with suppress(MlflowException):  # the reason it ended is history now
            self.client.delete_tag(run_id, keys.FAILURE_REASON)

    @contextmanager
    def system_metrics(self, run_id: str, interval_s: float = 10.0) -> Iterator[None]:
        """Sample CPU, memory, disk, network and (NVIDIA/AMD) GPU use into run_id meanwhile.

        MLflow's SystemMetricsMonitor, given the run id and this store explicitly (not the
        thread-local active run): metrics `system/cpu_utilization_percentage`,
        `system/system_memory_usage_megabytes`, `system/gpu_0_utilization_percentage`, ...
        one step per interval (psutil; nvidia-ml-py where there is an NVIDIA driver).
        interval_s 0 turns it off. A block shorter than one interval records nothing.
        """
        run_id = self.log.resolve(run_id)
        if interval_s <= 0 or run_id.startswith(PLACEHOLDER):
            yield  # off, or a run the server has not created yet (it is away)
            return
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(
            run_id, sampling_interval=interval_s, tracking_uri=self.tracking_uri
        )
        monitor.start()
        try:
            yield
        finally:
            monitor.finish()

    # -- reading runs back ------------------------------------------------------------------

    def get_run(self, run_id: str) -> Any:
        """A run, with its params, metrics and tags."""
        return self.client.get_run(run_id)

    def find_runs(self, filter_string: str) -> list[Any]:
        """Runs of this experiment matching an MLflow search filter, newest first."""
        return self.client.search_runs(
            [self.experiment_id],
            filter_string=filter_string,
            order_by=["attributes.start_time DESC"],
            max_results=1000,
        )

    def child_runs(self, parent_run_id: str, name_tag: str = "model") -> dict[str, Any]:
        """Name -> MLflow Run for the runs nested under a parent (the name from the tag
        `name_tag`, else the run's name)."""
        runs = self.find_runs(f"tags.`{keys.PARENT}` = '{parent_run_id}'")
        return {run.data.tags.get(name_tag, run.info.run_name): run for run in reversed(runs)}

    def artifact_text(self, run_id: str, path: str) -> str | None:
        """A text artifact of a run (None if the run has no such file)."""
        folder = str(PurePosixPath(path).parent)
        listed = self.client.list_artifacts(run_id, None if folder == "." else folder)
        if not any(f.path == path and not f.is_dir for f in listed):
            return None
        with tempfile.TemporaryDirectory() as tmp:
            local = self.client.download_artifacts(run_id, path, tmp)
            return Path(local).read_text()

    def metric_history(self, run_id: str, key: str) -> list[float]:
        """A metric's values in step order."""
        history = self.client.get_metric_history(run_id, key)
        return [m.value for m in sorted(history, key=lambda m: (m.step, m.timestamp))]

    def logged_steps(self, run_id: str, key: str) -> list[int]:
        """The steps at which a metric was logged, in order."""
        return sorted(m.step for m in self.client.get_metric_history(run_id, key))


def stopped_by(exc: BaseException) -> BaseException | None:
    """The interrupt (KeyboardInterrupt, SystemExit, Prefect's TerminationSignal) that exc was
    raised while handling, if any: a SIGTERM to a whole process group also stops the local
    Prefect API, and the flow's reports to it then fail while the signal unwinds the stack."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if not isinstance(cause, Exception):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def stop_reason(exc: BaseException) -> str:
    """Why a run was stopped, for its failure_reason tag: the exception's name, and the
    signal (Prefect's TerminationSignal carries it) or message when it has one."""
    import signal

    number = getattr(exc, "signal", None)
    if isinstance(number, int):
        with suppress(ValueError):
            return f"{type(exc).__name__}: {signal.Signals(number).name}"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
