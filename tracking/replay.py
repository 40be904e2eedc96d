"""One handler per tracking operation: how each write is performed from its spooled form.

A write that waited in the spool (tracking/spool.py) is a name and JSON arguments, plus the
folder of files kept with it (an artifact, a model); a write done at once goes through the
same handler, so a replayed run ends up exactly as a live one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag

from fmnist.tracking import keys
from fmnist.tracking.cleanup import no_half_logged_model
from fmnist.tracking.models import log_keras_model


class Target(Protocol):
    """Where a handler writes: a store's client and URI."""

    tracking_uri: str

    @property
    def client(self) -> Any: ...


Handler = Callable[[Target, str, dict[str, Any], Path | None], None]
HANDLERS: dict[str, Handler] = {}


def handles(op: str) -> Callable[[Handler], Handler]:
    """Register the function that performs operation `op` from its spooled form."""

    def register(handler: Handler) -> Handler:
        HANDLERS[op] = handler
        return handler

    return register


@handles("set_tags")
def _set_tags(w: Target, run_id: str, args: dict[str, Any], _: Path | None) -> None:
    tags = [RunTag(k, v) for k, v in args["tags"].items()]
    w.client.log_batch(run_id, tags=tags, synchronous=True)


@handles("log_params")
def _log_params(w: Target, run_id: str, args: dict[str, Any], _: Path | None) -> None:
    items = [Param(k, v) for k, v in args["params"].items()]
    for i in range(0, len(items), 100):  # log_batch takes at most 100 params a call
        w.client.log_batch(run_id, params=items[i : i + 100], synchronous=True)


@handles("log_metrics")
def _log_metrics(w: Target, run_id: str, args: dict[str, Any], _: Path | None) -> None:
    ts, step = args["timestamp"], args["step"]
    batch = [Metric(k, v, ts, step) for k, v in args["metrics"].items()]
    w.client.log_batch(run_id, metrics=batch, synchronous=True)


@handles("set_terminated")
def _set_terminated(w: Target, run_id: str, args: dict[str, Any], _: Path | None) -> None:
    w.client.set_terminated(run_id, status=args["status"], end_time=args["end_time"])


@handles("log_text")
def _log_text(w: Target, run_id: str, args: dict[str, Any], _: Path | None) -> None:
    w.client.log_text(run_id, args["text"], args["artifact_file"])


@handles("log_dict")
def _log_dict(w: Target, run_id: str, args: dict[str, Any], _: Path | None) -> None:
    w.client.log_dict(run_id, args["data"], args["artifact_file"])


@handles("log_artifact")
def _log_artifact(w: Target, run_id: str, args: dict[str, Any], blob: Path | None) -> None:
    path = Path(args["artifact_file"])
    folder = str(path.parent)
    w.client.log_artifact(run_id, str(_file(blob) / path.name), None if folder == "." else folder)


@handles("log_dataset")
def _log_dataset(w: Target, run_id: str, args: dict[str, Any], _: Path | None) -> None:
    from mlflow.entities import Dataset

    context = InputTag("mlflow.data.context", args["context"])
    entry = DatasetInput(Dataset(**args["dataset"]), tags=[context])
    w.client.log_inputs(run_id, datasets=[entry])


@handles("log_keras_model")
def _log_model(w: Target, run_id: str, args: dict[str, Any], blob: Path | None) -> None:
    import keras

    # Loaded compiled (the .keras file keeps the compile config): a registered model must
    # evaluate as one logged live does.
    model = keras.models.load_model(_file(blob) / "model.keras")
    example = np.zeros(args["example_shape"], dtype=args["example_dtype"])
    with no_half_logged_model(w.tracking_uri, run_id):
        uri = log_keras_model(w.tracking_uri, run_id, model, example)
    _set_tags(w, run_id, {"tags": {keys.MODEL_URI: uri}}, None)


def _file(blob: Path | None) -> Path:
    if blob is None:
        raise ValueError("this operation needs the file that was kept with it")
    return blob
