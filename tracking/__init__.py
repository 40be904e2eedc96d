"""The one module that talks to MLflow.

Every call names its run id explicitly. MLflow's "active run" is thread-local, and Prefect
runs tasks in worker threads (and, later, in other processes and on other machines), so the
fluent API's implicit run would attach metrics to the wrong run or to none. The fluent API
is used only where MLflow offers nothing else (logging a model), inside a short `with` block
on the thread that does the logging.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import mlflow
import numpy as np
from fmnist.conf.settings import settings
from fmnist.tracking.limits import (
    RequestLimits,
    TrackingUnavailable,
    is_unreachable,
    names_the_server,
    reaching,
)
from fmnist.tracking.spool import Spool
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient

__all__ = [
    "RequestLimits",
    "Tracker",
    "TrackingSpooled",
    "TrackingUnavailable",
    "open_tracker",
    "resolve_tracking_uri",
    "tracker_for",
]

log = logging.getLogger(__name__)

PARENT_TAG = "mlflow.parentRunId"
FLUSH_INTERVAL_S = 10.0
# (tracking URI, run id) -> monotonic time before which a failed flush is not tried again.
_NEXT_FLUSH: dict[tuple[str, str], float] = {}


class TrackingSpooled(RuntimeError):
    """A run ended while the tracking server was away: its writes wait in the spool."""


def unreachable(exc: BaseException) -> bool:
    """True if an error means the tracking server could not be reached (not a refusal)."""
    return isinstance(exc, TrackingUnavailable) or is_unreachable(exc)


RUN_NAME_TAG = "mlflow.runName"
MAX_PARAM_LENGTH = 6000  # MLflow rejects longer param values


def resolve_tracking_uri(configured: str) -> str:
    """MLFLOW_TRACKING_URI in the environment wins over the profile's URI."""
    return settings().mlflow_tracking_uri or configured


@contextmanager
def _fluent_uri(uri: str) -> Iterator[None]:
    """Point MLflow's process-wide (fluent) API at uri for the duration of a block.

    mlflow.set_tracking_uri also writes MLFLOW_TRACKING_URI into os.environ, where
    resolve_tracking_uri would later take it for the user's choice and send the next run in
    this process to the previous run's store: the environment is put back afterwards.
    """
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved


def _prepare_local_store(uri: str) -> None:
    # SQLite does not create the folder its database file lives in.
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        db.parent.mkdir(parents=True, exist_ok=True)


@dataclass(frozen=True)
class Tracker:
    """A handle on one tracking store and experiment; cheap to copy into any thread."""

    tracking_uri: str
    experiment_id: str
    experiment_name: str
    spool_dir: str | None = None  # where writes wait while the server is away (None: raise)

    @property
    def spool(self) -> Spool | None:
        """The spool for writes the server could not take, if this tracker keeps one."""
        return Spool(self.spool_dir) if self.spool_dir else None

    @property
    def client(self) -> MlflowClient:
        """A client bound to this tracker's store (not to the process-wide default)."""
        return MlflowClient(tracking_uri=self.tracking_uri)

    # -- runs -------------------------------------------------------------------------

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
            all_tags[PARENT_TAG] = parent_run_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        return run.info.run_id

    def end_run(
        self, run_id: str, *, failed: bool = False, reason: str | None = None, killed: bool = False
    ) -> None:
        """Mark a run FINISHED, FAILED or KILLED; a failure's reason is kept as a tag."""
        if reason:
            self.set_tags(run_id, {"failure_reason": reason[:5000]})
        status = RunStatus.KILLED if killed else RunStatus.FAILED if failed else RunStatus.FINISHED
        self._write(
            run_id,
            "set_terminated",
            {"status": RunStatus.to_string(status), "end_time": int(time.time() * 1000)},
        )

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
            reason = f"{type(exc).__name__}: {exc}"
            if unreachable(exc):
                reason = f"tracking server {self.tracking_uri} unreachable: {reason}"
            self.end_run(run_id, failed=True, reason=reason)
            self.raise_if_spooled(run_id, exc)
            raise
        except BaseException as exc:  # KeyboardInterrupt, SystemExit: stopped, not broken
            self.end_run(run_id, killed=True, reason=f"{type(exc).__name__}: {exc}")
            raise
        self.end_run(run_id)
        self.raise_if_spooled(run_id)

    # -- the spool ----------------------------------------------------------------------

    def _write(
        self,
        run_id: str,
        op: str,
        args: dict[str, Any],
        write_file: Callable[[Path], None] | None = None,
        now: Callable[[], Any] | None = None,
    ) -> bool:
        """Do a write now, or keep it in the spool while the server is away; True if done.

        `now` does the write from live objects; without it the write is replayed from
        `args` (and the spooled file), exactly as an upload later would.
        """
        spool = self.spool
        if spool is not None and spool.pending(run_id) and not self.flush(run_id):
            spool.append(run_id, op, args, write_file)  # behind the others: order holds
            return False
        try:
            if now is not None:
                now()
            else:
                self._replay(run_id, op, args, None)
            return True
        except Exception as exc:
            if spool is None or not unreachable(exc):
                raise
            spool.append(run_id, op, args, write_file)
            log.warning(
                "tracking server %s unreachable (%s); %s for run %s kept in %s",
                self.tracking_uri,
                type(exc).__name__,
                op,
                run_id,
                spool.folder(run_id),
            )
            return False

    def flush(self, run_id: str, *, force: bool = False) -> bool:
        """Upload a run's spooled writes, oldest first; True when none is left.

        While the server is away, a retry waits FLUSH_INTERVAL_S (unless forced), so that
        training is not held up by one timed-out request per epoch.
        """
        spool = self.spool
        if spool is None or not spool.pending(run_id):
            return True
        key = (self.tracking_uri, run_id)
        if not force and time.monotonic() < _NEXT_FLUSH.get(key, 0.0):
            return False
        done = 0
        try:
            for entry in spool.ops(run_id):
                blob = (
                    spool.blob(run_id, entry["args"]["blob"]) if "blob" in entry["args"] else None
                )
                self._replay(run_id, entry["op"], entry["args"], blob)
                done += 1
        except Exception as exc:
            if not unreachable(exc):
                raise
            _NEXT_FLUSH[key] = time.monotonic() + FLUSH_INTERVAL_S
            return False
        finally:
            spool.done(run_id, done)
        _NEXT_FLUSH.pop(key, None)
        log.info("run %s: %d spooled writes uploaded to %s", run_id, done, self.tracking_uri)
        return True

    def raise_if_spooled(self, run_id: str, cause: BaseException | None = None) -> None:
        """After a run ends: TrackingSpooled if some of its writes could not be uploaded."""
        spool = self.spool
        if spool is None or self.flush(run_id, force=True):
            return
        raise TrackingSpooled(
            f"tracking server {self.tracking_uri} unreachable: {spool.pending(run_id)} writes "
            f"of run {run_id} are kept in {spool.folder(run_id)}; upload them with "
            f"`fmnist spool upload --spool {spool.root}` once the server is back"
        ) from cause

    def _replay(self, run_id: str, op: str, args: dict[str, Any], blob: Path | None) -> None:
        """Perform one write from its spooled form."""
        client = self.client
        if op == "set_tags":
            tags = [RunTag(k, v) for k, v in args["tags"].items()]
            client.log_batch(run_id, tags=tags, synchronous=True)
        elif op == "log_params":
            items = [Param(k, v) for k, v in args["params"].items()]
            for i in range(0, len(items), 100):  # log_batch takes at most 100 params a call
                client.log_batch(run_id, params=items[i : i + 100], synchronous=True)
        elif op == "log_metrics":
            ts, step = args["timestamp"], args["step"]
            batch = [Metric(k, v, ts, step) for k, v in args["metrics"].items()]
            client.log_batch(run_id, metrics=batch, synchronous=True)
        elif op == "set_terminated":
            client.set_terminated(run_id, status=args["status"], end_time=args["end_time"])
        elif op == "log_text":
            client.log_text(run_id, args["text"], args["artifact_file"])
        elif op == "log_dict":
            client.log_dict(run_id, args["data"], args["artifact_file"])
        elif op == "log_artifact":
            folder = str(Path(args["artifact_file"]).parent)
            client.log_artifact(
                run_id,
                str(blob / Path(args["artifact_file"]).name),
                None if folder == "." else folder,
            )
        elif op == "log_dataset":
            from mlflow.entities import Dataset

            entry = DatasetInput(
                Dataset(**args["dataset"]), tags=[InputTag("mlflow.data.context", args["context"])]
            )
            client.log_inputs(run_id, datasets=[entry])
        elif op == "log_keras_model":
            import keras

            model = keras.models.load_model(blob / "model.keras", compile=False)
            example = np.zeros(args["example_shape"], dtype=args["example_dtype"])
            uri = self._log_keras_model_now(run_id, model, example)
            self._replay(run_id, "set_tags", {"tags": {"model_uri": uri}}, None)
        else:
            raise ValueError(f"unknown spooled operation {op!r}")

    def reopen(self, run_id: str, tags: Mapping[str, Any] | None = None) -> None:
        """Make an ended (or orphaned) run RUNNING again, to go on logging into it."""
        from mlflow.exceptions import MlflowException

        self.client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
        if tags:
            self.set_tags(run_id, tags)
        with suppress(MlflowException):  # the reason it ended is history now
            self.client.delete_tag(run_id, "failure_reason")

    def find_runs(self, filter_string: str) -> list[Any]:
        """Runs of this experiment matching an MLflow search filter, newest first."""
        return self.client.search_runs(
            [self.experiment_id],
            filter_string=filter_string,
            order_by=["attributes.start_time DESC"],
            max_results=1000,
        )

    def logged_steps(self, run_id: str, key: str) -> list[int]:
        """The steps at which a metric was logged, in order."""
        return sorted(m.step for m in self.client.get_metric_history(run_id, key))

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        """Set several tags at once."""
        self._write(run_id, "set_tags", {"tags": {k: str(v) for k, v in tags.items()}})

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Log params (values stringified and cut to MLflow's limit)."""
        cut = {k: str(v)[:MAX_PARAM_LENGTH] for k, v in params.items()}
        self._write(run_id, "log_params", {"params": cut})

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        """Log several metrics at one step, with one request; stamped now, even if spooled."""
        values = {k: float(v) for k, v in metrics.items()}
        args = {"metrics": values, "step": step, "timestamp": int(time.time() * 1000)}
        self._write(run_id, "log_metrics", args)

    @contextmanager
    def system_metrics(self, run_id: str, interval_s: float = 10.0) -> Iterator[None]:
        """Sample CPU, memory, disk, network and (NVIDIA/AMD) GPU use into run_id meanwhile.

        MLflow's SystemMetricsMonitor, given the run id and this store explicitly (not the
        thread-local active run): metrics `system/cpu_utilization_percentage`,
        `system/system_memory_usage_megabytes`, `system/gpu_0_utilization_percentage`,
        `system/gpu_0_memory_usage_megabytes`, `system/gpu_0_power_usage_watts`, ... one step
        per interval (psutil; nvidia-ml-py where there is an NVIDIA driver). interval_s 0
        turns it off. Stop it before the run ends: the monitor also stops by itself when it
        sees the run terminated. A block shorter than one interval records nothing.
        """
        if interval_s <= 0:
            yield
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

    def child_runs(self, parent_run_id: str) -> dict[str, Any]:
        """Model name -> MLflow Run, for the runs nested under a parent."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
            max_results=1000,
        )
        return {run.data.tags.get("model", run.info.run_name): run for run in runs}

    def child_results(self, parent_run_id: str) -> dict[str, tuple[str, float | None]]:
        """Model name -> (run id, test_accuracy or None) for the runs nested under a parent."""
        return {
            name: (run.info.run_id, run.data.metrics.get("test_accuracy"))
            for name, run in self.child_runs(parent_run_id).items()
        }

    def metric_history(self, run_id: str, key: str) -> list[float]:
        """A metric's values in step order."""
        history = self.client.get_metric_history(run_id, key)
        return [m.value for m in sorted(history, key=lambda m: (m.step, m.timestamp))]

    def set_description(self, run_id: str, markdown: str) -> None:
        """The run's description, shown (as Markdown) on its page in the MLflow UI."""
        self.set_tags(run_id, {"mlflow.note.content": markdown})

    # -- model registry ----------------------------------------------------------------

    def alias_version(self, name: str, alias: str) -> Any | None:
        """The model version an alias points at, or None (no such model or alias)."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version_by_alias(name, alias)
        except MlflowException:
            return None

    def register(self, model_uri: str, name: str, tags: Mapping[str, Any] | None = None) -> str:
        """Register a logged model as a new version of `name` (created if needed), tagged."""
        # register_model creates the registered model itself when it does not exist yet.
        with _fluent_uri(self.tracking_uri):
            version = mlflow.register_model(
                model_uri, name, tags={k: str(v) for k, v in (tags or {}).items()}
            )
        return str(version.version)

    def model_version(self, model_uri: str) -> Any:
        """The registry entry behind models:/NAME@ALIAS or models:/NAME/VERSION."""
        path = model_uri.removeprefix("models:/")
        if path == model_uri or not path:
            raise ValueError(f"{model_uri!r} is not a registry URI (models:/NAME@ALIAS)")
        if "@" in path:
            name, _, alias = path.partition("@")
            return self.client.get_model_version_by_alias(name, alias)
        name, _, version = path.rpartition("/")
        return self.client.get_model_version(name, version)

    def get_run(self, run_id: str) -> Any:
        """A run, with its params, metrics and tags."""
        return self.client.get_run(run_id)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Point an alias (champion, challenger) at a version."""
        self.client.set_registered_model_alias(name, alias, version)

    def load_keras_model(self, model_uri: str) -> Any:
        """Load a Keras model logged to (or registered in) this store."""
        import mlflow.keras

        with _fluent_uri(self.tracking_uri):
            return mlflow.keras.load_model(model_uri)

    # -- artifacts --------------------------------------------------------------------

    def log_figure(self, run_id: str, figure: Any, artifact_file: str) -> None:
        """Save a matplotlib figure as an artifact (PNG by the file's suffix)."""
        self._write(
            run_id,
            "log_artifact",
            {"artifact_file": artifact_file},
            write_file=lambda folder: figure.savefig(folder / Path(artifact_file).name),
            now=lambda: self.client.log_figure(run_id, figure, artifact_file),
        )

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        """Save a text artifact."""
        self._write(run_id, "log_text", {"text": text, "artifact_file": artifact_file})

    def log_dict(self, run_id: str, data: Mapping[str, Any], artifact_file: str) -> None:
        """Save a JSON or YAML artifact (by the file's suffix)."""
        plain = json.loads(json.dumps(dict(data), default=str))  # as it will be stored
        self._write(run_id, "log_dict", {"data": plain, "artifact_file": artifact_file})

    def log_dataset(
        self,
        run_id: str,
        features: np.ndarray,
        targets: np.ndarray,
        *,
        name: str,
        digest: str,
        context: str,
        source: str | None = None,
    ) -> None:
        """Record a dataset input (MLflow dataset tracking) with our content digest."""
        import mlflow.data

        with warnings.catch_warnings():
            # MLflow registers two equivalent local-file source classes and warns that a
            # local path matches both; either is right.
            warnings.filterwarnings("ignore", "The specified dataset source can be interpreted")
            dataset = mlflow.data.from_numpy(
                features,
                targets=targets,
                name=name,
                digest=digest[:36],
                source=Path(source).resolve().as_uri() if source else None,
            )
        entity = dataset._to_mlflow_entity()
        fields = ("name", "digest", "source_type", "source", "schema", "profile")
        args = {"dataset": {f: getattr(entity, f) for f in fields}, "context": context}
        self._write(run_id, "log_dataset", args)

    def log_keras_model(self, run_id: str, model: Any, example: np.ndarray) -> str | None:
        """Log a Keras model with a signature and tag the run with its URI; return the URI,
        or None if the server is away and the model waits in the spool (saved as .keras)."""
        uris: list[str] = []

        def now() -> None:
            uris.append(self._log_keras_model_now(run_id, model, example))
            self.set_tags(run_id, {"model_uri": uris[0]})  # what the champion step registers

        done = self._write(
            run_id,
            "log_keras_model",
            {"example_shape": list(example.shape), "example_dtype": str(example.dtype)},
            write_file=lambda folder: model.save(folder / "model.keras"),
            now=now,
        )
        return uris[0] if done else None

    def _log_keras_model_now(self, run_id: str, model: Any, example: np.ndarray) -> str:
        """Log a Keras model with a signature; return its model URI.

        The signature comes from infer_signature: in MLflow 3.17 `input_example=` failed
        with FileNotFoundError. pip requirements are given, not inferred, because inference
        re-imports the framework in a subprocess (tens of seconds per model).
        """
        import keras
        import mlflow.keras
        from mlflow.models import infer_signature

        # A signature records names, dtypes and shapes only: an output of the model's shape
        # serves, and spares a predict() call (and a retrace) on a new batch size.
        output = np.zeros((len(example), *model.output_shape[1:]), dtype=np.float32)
        signature = infer_signature(example, output)
        requirements = [f"keras=={keras.__version__}", *backend_requirements()]
        with self._active(run_id):
            info = mlflow.keras.log_model(
                model, name="model", signature=signature, pip_requirements=requirements
            )
        return info.model_uri

    @contextmanager
    def _active(self, run_id: str) -> Iterator[None]:
        """Make run_id the active run on this thread only, without ending it afterwards."""
        with _fluent_uri(self.tracking_uri):
            mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None)
            try:
                yield
            finally:
                # end_run() would mark the run FINISHED; we only detach it from this thread
                # and put back the RUNNING status, since the caller decides when it ends.
                mlflow.end_run(status=RunStatus.to_string(RunStatus.RUNNING))

    # -- links ------------------------------------------------------------------------

    def experiment_url(self, ui: str) -> str:
        """The experiment's runs list (MLflow 3 otherwise opens on the GenAI overview)."""
        return f"{ui.rstrip('/')}/#/experiments/{self.experiment_id}/runs"

    def run_url(self, ui: str, run_id: str) -> str:
        """A run's page in the MLflow UI."""
        return f"{ui.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{run_id}"

    def compare_url(self, ui: str, run_ids: list[str]) -> str:
        """The compare page for the given runs."""
        runs = quote(json.dumps(run_ids, separators=(",", ":")))
        exps = quote(json.dumps([self.experiment_id], separators=(",", ":")))
        return f"{ui.rstrip('/')}/#/compare-runs?runs={runs}&experiments={exps}"


def backend_requirements() -> list[str]:
    """The pinned packages of the Keras backend in use, for a logged model's requirements.

    A model saved under JAX serves where jax and jaxlib are installed, not TensorFlow.
    """
    from importlib.metadata import PackageNotFoundError, version

    import keras

    packages = {
        "tensorflow": ["tensorflow"],
        "jax": ["jax", "jaxlib"],
        "torch": ["torch"],
    }.get(keras.backend.backend(), [])
    out = []
    for package in packages:
        try:
            out.append(f"{package}=={version(package)}")
        except PackageNotFoundError:  # e.g. a source checkout: leave it unpinned
            out.append(package)
    return out


# Every public Tracker method: an unreachable server is a TrackingUnavailable naming it.
for _name, _member in list(vars(Tracker).items()):
    if not _name.startswith("_") and callable(_member):
        setattr(Tracker, _name, names_the_server(_member))
del _name, _member


@contextmanager
def _first_use_lock(uri: str) -> Iterator[None]:
    """Serialise the first use of a SQLite store across processes.

    Two runs opening a fresh SQLite store at once would both create its schema (MLflow runs
    its migrations on first use) and one fails with `duplicate column name`; both would also
    create the experiment. A file lock next to the database makes the second wait until the
    first is done; servers (http) and other databases handle their own concurrency.
    """
    if not uri.startswith("sqlite:///"):
        yield
        return
    from filelock import FileLock

    db = Path(uri.removeprefix("sqlite:///"))
    with FileLock(f"{db}.lock", timeout=300):
        yield


def open_tracker(
    tracking_uri: str,
    experiment: str,
    artifact_location: str | None = None,
    spool_dir: str | None = None,
    *,
    limits: RequestLimits | None = None,
) -> Tracker:
    """Connect to the store (creating a local SQLite store and the experiment if needed).

    With spool_dir, writes the server cannot take while it is away wait there
    (tracking/spool.py). limits: bounds on each call to a tracking server
    (tracking.request_timeout_s, ...), applied before the first request; an unreachable
    server raises TrackingUnavailable.
    """
    uri = resolve_tracking_uri(tracking_uri)
    (limits or RequestLimits()).apply()
    _prepare_local_store(uri)
    with reaching(uri), _first_use_lock(uri):
        return _open_experiment(uri, experiment, artifact_location, spool_dir)


def tracker_for(settings: Any) -> Tracker:
    """The tracker a tracking config asks for: its store and experiment, its spool, and its
    bounds on calls to a server (tracking.request_timeout_s, max_retries, backoff_factor)."""
    return open_tracker(
        settings.tracking_uri,
        settings.experiment,
        settings.artifact_location,
        settings.spool_dir,
        limits=RequestLimits.of(settings),
    )


def _open_experiment(
    uri: str, experiment: str, artifact_location: str | None, spool_dir: str | None
) -> Tracker:
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is not None:
        return Tracker(uri, exp.experiment_id, experiment, spool_dir)
    location = None
    # A relative artifact folder only makes sense next to a local store; a server picks
    # (and serves) its own artifact root.
    if artifact_location and not uri.startswith(("http://", "https://")):
        if "://" in artifact_location:
            location = artifact_location
        else:
            path = Path(artifact_location).expanduser().resolve()
            path.mkdir(parents=True, exist_ok=True)
            location = path.as_uri()
    exp_id = client.create_experiment(experiment, artifact_location=location)
    return Tracker(uri, exp_id, experiment, spool_dir)
