"""The one module that talks to MLflow.

Every call names its run id explicitly. MLflow's "active run" is thread-local, and Prefect
runs tasks in worker threads (and, later, in other processes and on other machines), so the
fluent API's implicit run would attach metrics to the wrong run or to none. The fluent API
is used only where MLflow offers nothing else (logging a model), inside a short `with` block
on the thread that does the logging.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import mlflow
import numpy as np
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient

from tracking.limits import RequestLimits, TrackingUnavailable, names_the_server, reaching

__all__ = [
    "RequestLimits",
    "Tracker",
    "TrackingUnavailable",
    "open_tracker",
    "resolve_tracking_uri",
]

PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
MAX_PARAM_LENGTH = 6000  # MLflow rejects longer param values


def resolve_tracking_uri(configured: str) -> str:
    """MLFLOW_TRACKING_URI in the environment wins over the profile's URI."""
    return os.environ.get("MLFLOW_TRACKING_URI") or configured


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

    def end_run(self, run_id: str, *, failed: bool = False, reason: str | None = None) -> None:
        """Mark a run FINISHED or FAILED; a failure's reason is kept as a tag."""
        if reason:
            self.set_tags(run_id, {"failure_reason": reason[:5000]})
        status = RunStatus.to_string(RunStatus.FAILED if failed else RunStatus.FINISHED)
        self.client.set_terminated(run_id, status=status)

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        """Set several tags at once."""
        self.client.log_batch(
            run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()], synchronous=True
        )

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Log params (values stringified and cut to MLflow's limit)."""
        items = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items()]
        # log_batch takes at most 100 params a call.
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100], synchronous=True)

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        """Log several metrics at one step, with one request."""
        ts = int(time.time() * 1000)
        batch = [Metric(k, float(v), ts, step) for k, v in metrics.items()]
        self.client.log_batch(run_id, metrics=batch, synchronous=True)

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

    def register(self, model_uri: str, name: str) -> str:
        """Register a logged model as a new version of `name` (created if needed)."""
        # register_model creates the registered model itself when it does not exist yet.
        with _fluent_uri(self.tracking_uri):
            version = mlflow.register_model(model_uri, name)
        return str(version.version)

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
        self.client.log_figure(run_id, figure, artifact_file)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        """Save a text artifact."""
        self.client.log_text(run_id, text, artifact_file)

    def log_dict(self, run_id: str, data: Mapping[str, Any], artifact_file: str) -> None:
        """Save a JSON or YAML artifact (by the file's suffix)."""
        self.client.log_dict(run_id, dict(data), artifact_file)

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
        entry = DatasetInput(
            dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)]
        )
        self.client.log_inputs(run_id, datasets=[entry])

    def log_keras_model(self, run_id: str, model: Any, example: np.ndarray) -> str:
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
        requirements = [f"keras=={keras.__version__}"]
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            requirements.append(f"tensorflow=={tf.__version__}")
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
    *,
    limits: RequestLimits | None = None,
) -> Tracker:
    """Connect to the store (creating a local SQLite store and the experiment if needed).

    limits: bounds on each call to a tracking server (tracking.request_timeout_s, ...),
    applied before the first request; an unreachable server raises TrackingUnavailable.
    """
    uri = resolve_tracking_uri(tracking_uri)
    (limits or RequestLimits()).apply()
    _prepare_local_store(uri)
    with reaching(uri), _first_use_lock(uri):
        return _open_experiment(uri, experiment, artifact_location)


def _open_experiment(uri: str, experiment: str, artifact_location: str | None) -> Tracker:
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is not None:
        return Tracker(uri, exp.experiment_id, experiment)
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
    return Tracker(uri, exp_id, experiment)
