"""Writes to a run, and the spool that keeps them while the server is away.

Every write is an operation with JSON arguments (and, for an artifact or a model, a file):
`Writer.write` performs it now, or, when the server cannot be reached, appends it to the
spool (tracking/spool.py), behind any the run already has waiting, so the order holds.
`flush` replays a run's kept operations, oldest first, through the same handlers (one per
operation: tracking/replay.py) that an upload by `fmnist spool upload` uses.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fmnist.tracking import keys
from fmnist.tracking.client import BoundedClient, unreachable
from fmnist.tracking.models import log_keras_model
from fmnist.tracking.replay import HANDLERS
from fmnist.tracking.spool import Spool

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 10.0  # while the server is away, a run's spool is retried this often


class TrackingSpooled(RuntimeError):
    """A run ended while the tracking server was away: its writes wait in the spool."""


@dataclass(frozen=True)
class Writer:
    """Writes to the runs of one store; with spool_dir, kept there while it is away."""

    tracking_uri: str
    spool_dir: str | None = None

    @property
    def client(self) -> BoundedClient:
        """A bounded client of this store."""
        return BoundedClient(self.tracking_uri)

    @property
    def spool(self) -> Spool | None:
        """The spool for writes the server could not take, if this writer keeps one."""
        return Spool(self.spool_dir) if self.spool_dir else None

    def write(
        self,
        run_id: str,
        op: str,
        args: dict[str, Any],
        write_file: Callable[[Path], None] | None = None,
        now: Callable[[], Any] | None = None,
    ) -> bool:
        """Do a write now, or keep it in the spool while the server is away; True if done.

        `now` does the write from live objects; without it the write is replayed from
        `args`, exactly as an upload later would.
        """
        spool = self.spool
        if spool is not None and spool.pending(run_id) and not self.flush(run_id):
            spool.append(run_id, op, args, write_file)  # behind the others: order holds
            return False
        try:
            if now is not None:
                now()
            else:
                self.replay(run_id, op, args)
            return True
        except Exception as exc:
            if spool is None or not unreachable(exc):
                raise
            spool.append(run_id, op, args, write_file)
            spool.hold(run_id, FLUSH_INTERVAL_S)
            log.warning(
                "tracking server %s unreachable (%s); %s for run %s kept in %s",
                self.tracking_uri,
                type(exc).__name__,
                op,
                run_id,
                spool.folder(run_id),
            )
            return False

    def replay(self, run_id: str, op: str, args: dict[str, Any], blob: Path | None = None) -> None:
        """Perform one operation from its spooled form."""
        handler = HANDLERS.get(op)
        if handler is None:
            raise ValueError(f"unknown spooled operation {op!r}")
        handler(self, run_id, args, blob)

    def flush(self, run_id: str, *, force: bool = False) -> bool:
        """Upload a run's spooled writes, oldest first; True when none is left.

        While the server is away a run's spool is tried again only every FLUSH_INTERVAL_S
        (unless forced), so training is not held up by a timed-out request per write.
        """
        spool = self.spool
        if spool is None or not spool.pending(run_id):
            return True
        if not force and spool.held(run_id):
            return False
        done = 0
        try:
            for entry in spool.ops(run_id):
                args = entry["args"]
                blob = spool.blob(run_id, args["blob"]) if "blob" in args else None
                self.replay(run_id, entry["op"], args, blob)
                done += 1
        except Exception as exc:
            if not unreachable(exc):
                raise
            spool.hold(run_id, FLUSH_INTERVAL_S)
            return False
        finally:
            spool.done(run_id, done)
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

    # -- the operations ---------------------------------------------------------------------

    def tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        """Set several tags at once."""
        self.write(run_id, "set_tags", {"tags": {k: str(v) for k, v in tags.items()}})

    def note(self, run_id: str, markdown: str) -> None:
        """The run's description, shown (as Markdown) on its page in the MLflow UI."""
        self.tags(run_id, {keys.NOTE: markdown})

    def params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Log params (values stringified and cut to MLflow's limit)."""
        cut = {k: str(v)[: keys.MAX_PARAM_LENGTH] for k, v in params.items()}
        self.write(run_id, "log_params", {"params": cut})

    def metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        """Log several metrics at one step, with one request; stamped now, even if spooled."""
        values = {k: float(v) for k, v in metrics.items()}
        args = {"metrics": values, "step": step, "timestamp": int(time.time() * 1000)}
        self.write(run_id, "log_metrics", args)

    def terminated(self, run_id: str, status: str) -> None:
        """End a run with a status (FINISHED, FAILED, KILLED), stamped now."""
        args = {"status": status, "end_time": int(time.time() * 1000)}
        self.write(run_id, "set_terminated", args)

    def text(self, run_id: str, text: str, artifact_file: str) -> None:
        """Save a text artifact."""
        self.write(run_id, "log_text", {"text": text, "artifact_file": artifact_file})

    def dict(self, run_id: str, data: Mapping[str, Any], artifact_file: str) -> None:
        """Save a JSON or YAML artifact (by the file's suffix)."""
        plain = json.loads(json.dumps(dict(data), default=str))  # as it will be stored
        self.write(run_id, "log_dict", {"data": plain, "artifact_file": artifact_file})

    def figure(self, run_id: str, figure: Any, artifact_file: str) -> None:
        """Save a matplotlib figure as an artifact (PNG by the file's suffix)."""
        self.write(
            run_id,
            "log_artifact",
            {"artifact_file": artifact_file},
            write_file=lambda folder: figure.savefig(folder / Path(artifact_file).name),
            now=lambda: self.client.log_figure(run_id, figure, artifact_file),
        )

    def file(self, run_id: str, path: Path, artifact_file: str) -> None:
        """Save a local file as an artifact under artifact_file (its folder and name)."""
        import shutil

        self.write(
            run_id,
            "log_artifact",
            {"artifact_file": artifact_file},
            write_file=lambda folder: shutil.copyfile(path, folder / Path(artifact_file).name),
        )

    def dataset(
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
        self.write(run_id, "log_dataset", args)

    def keras_model(self, run_id: str, model: Any, example: np.ndarray) -> str | None:
        """Log a Keras model with a signature and tag the run with its URI; return the URI,
        or None if the server is away and the model waits in the spool (saved as .keras)."""
        uris: list[str] = []

        def now() -> None:
            uris.append(log_keras_model(self.tracking_uri, run_id, model, example))
            self.tags(run_id, {keys.MODEL_URI: uris[0]})  # what the registry step reads

        done = self.write(
            run_id,
            "log_keras_model",
            {"example_shape": list(example.shape), "example_dtype": str(example.dtype)},
            write_file=lambda folder: model.save(folder / "model.keras"),
            now=now,
        )
        return uris[0] if done else None
