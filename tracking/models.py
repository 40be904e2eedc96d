"""Keras models in MLflow: logging one to a run (with a signature and pinned requirements)
and loading one back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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
    """Log a Keras model with a signature to a run; return its model URI.

    The signature comes from infer_signature: in MLflow 3.17 `input_example=` failed with
    FileNotFoundError. pip requirements are given, not inferred, because inference
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
    with active_run(tracking_uri, run_id):
        info = mlflow.keras.log_model(
            model, name="model", signature=signature, pip_requirements=requirements
        )
    return info.model_uri


def load_keras_model(tracking_uri: str, model_uri: str) -> Any:
    """Load a Keras model logged to (or registered in) a store, compiled as it was saved."""
    import mlflow.keras

    with fluent_uri(tracking_uri):
        return mlflow.keras.load_model(model_uri)
