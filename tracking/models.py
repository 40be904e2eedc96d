"""Keras models in MLflow: logging one to a run as the served model (tracking/pyfunc.py, with
a signature, an input example and pinned requirements) and loading the Keras model back."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.entities import RunStatus

from fmnist.tracking.client import fluent_uri


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


@contextmanager
def active_run(tracking_uri: str, run_id: str) -> Iterator[None]:
    """Make run_id the active run on this thread only, without ending it afterwards (for the
    fluent API's log_model, which has no run id argument)."""
    with fluent_uri(tracking_uri):
        mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None)
        try:
            yield
        finally:
            # end_run() would mark the run FINISHED; we only detach it from this thread and
            # put back the RUNNING status, since the caller decides when it ends.
            mlflow.end_run(status=RunStatus.to_string(RunStatus.RUNNING))


def log_keras_model(tracking_uri: str, run_id: str, model: Any, example: np.ndarray) -> str:
    """Log a Keras model to a run as the served model (tracking/pyfunc.py: the Keras model
    inside as an artifact, with a signature and an input example); return its model URI.

    pip requirements are given, not inferred, because inference re-imports the framework in
    a subprocess (tens of seconds per model).
    """
    import keras
    import mlflow.pyfunc

    from fmnist.tracking.pyfunc import (
        KERAS_ARTIFACT,
        KERAS_FILE,
        SIGNATURE,
        input_example,
        requirements,
    )

    framework = [f"keras=={keras.__version__}", *backend_requirements()]
    with tempfile.TemporaryDirectory() as tmp, active_run(tracking_uri, run_id):
        path = Path(tmp) / KERAS_FILE
        model.save(path)  # compiled as trained: load_keras_model gives it back as it was
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(Path(__file__).with_name("served_model.py")),
            artifacts={KERAS_ARTIFACT: str(path)},
            signature=SIGNATURE,
            input_example=input_example(example),
            pip_requirements=requirements(framework),
        )
    return info.model_uri


def load_keras_model(tracking_uri: str, model_uri: str) -> Any:
    """The Keras model of a model logged to (or registered in) a store, compiled as it was
    saved: the one inside a served (pyfunc) model, or a model of the Keras flavour (logged
    before the served model existed)."""
    import keras
    import mlflow.artifacts
    import mlflow.keras
    from mlflow.models import Model

    from fmnist.tracking.pyfunc import KERAS_FILE

    # A folder of our own, removed afterwards: MLflow's default is a temporary folder left
    # behind on every load (each promotion, each `fmnist predict`).
    with tempfile.TemporaryDirectory() as tmp:
        with fluent_uri(tracking_uri):
            local = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=tmp))
        if "keras" in Model.load(local).flavors:
            return mlflow.keras.load_model(str(local))
        found = sorted(local.glob(f"artifacts/**/{KERAS_FILE}"))
        if not found:
            raise ValueError(f"{model_uri} holds no Keras model ({KERAS_FILE})")
        return keras.models.load_model(found[0])
