"""The writes a run gets (`tracker.log`): metrics, params, tags, artifacts, datasets and
models, each an operation with JSON arguments that the outbox (tracking/outbox.py) does now
or keeps in the spool while the server is away."""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fmnist.tracking import keys
from fmnist.tracking.cleanup import no_half_logged_model
from fmnist.tracking.models import log_keras_model
from fmnist.tracking.outbox import Outbox, TrackingSpooled

__all__ = ["TrackingSpooled", "Writer"]


@dataclass(frozen=True)
class Writer(Outbox):
    """The writes a run gets: metrics, params, tags, artifacts, models (each through the
    outbox: done now, or kept in the spool while the server is away)."""

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
            now=lambda target: self.client.log_figure(target, figure, artifact_file),
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

        def now(target: str) -> None:
            with no_half_logged_model(self.tracking_uri, target):
                uris.append(log_keras_model(self.tracking_uri, target, model, example))
            self.tags(run_id, {keys.MODEL_URI: uris[0]})  # what the registry step reads

        done = self.write(
            run_id,
            "log_keras_model",
            {"example_shape": list(example.shape), "example_dtype": str(example.dtype)},
            write_file=lambda folder: model.save(folder / "model.keras"),
            now=now,
        )
        return uris[0] if done else None
