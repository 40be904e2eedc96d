"""The registered model: an MLflow pyfunc that takes what users have (PNG or JPEG bytes as
base64, uint8 pixels, normalised floats) and answers a class index, class name and the ten
probabilities per image. The trained Keras model travels inside it as an artifact
(model.keras); the preprocessing is stages/serving.py, the same code batch scoring uses.

The model is logged as code (tracking/served_model.py, MLflow's "model from code": no
pickle), and that code imports this module: it is served where this project is installed
(`fmnist serve`, the stack's serving service, our venv), which the model's requirements say
by naming the project. Keep this module's import path and the class's name.
"""

from __future__ import annotations

import base64
import io
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel
from mlflow.types.schema import AnyType, Array, ColSpec, Schema

from fmnist.stages.serving import COLUMN, BadInput, answers, images_of, prepare

KERAS_ARTIFACT = "keras_model"  # the key in context.artifacts
KERAS_FILE = "model.keras"
DISTRIBUTION = "fashion-mnist-pipeline"  # this project, as pip knows it
# Images per forward pass: a payload at the size limit holds thousands of small PNGs, and
# the VGG's first activations alone take about 200 kB per image.
CHUNK = 256

# `image` is Any: one column takes base64 text, and arrays of several shapes and dtypes;
# stages/serving.py checks each value and names what is wrong.
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec(AnyType(), COLUMN)]),
    outputs=Schema(
        [
            ColSpec("long", "class_index"),
            ColSpec("string", "class_name"),
            ColSpec(Array("double"), "probabilities"),
            ColSpec("string", "warning", required=False),
        ]
    ),
)


class FashionMnistModel(PythonModel):
    """Fashion-MNIST classifier: images in any form users have -> class and probabilities."""

    def load_context(self, context: Any) -> None:
        """Load the Keras model shipped as an artifact (not compiled: it only predicts)."""
        import keras

        self.keras_model = keras.models.load_model(context.artifacts[KERAS_ARTIFACT], compile=False)

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        """One row per image: class_index, class_name, probabilities (ten), warning."""
        try:
            values = images_of(_column(model_input))
            batch, warnings = prepare(values)
        except BadInput as exc:
            # INVALID_PARAMETER_VALUE: MLflow's scoring server answers 400 with this message.
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from exc
        probs = np.concatenate(
            [
                np.asarray(self.keras_model.predict_on_batch(batch[i : i + CHUNK]))
                for i in range(0, len(batch), CHUNK)
            ]
        )
        return pd.DataFrame([vars(a) for a in answers(probs, warnings)])


def _column(model_input: Any) -> list[Any]:
    # The scoring server and mlflow.pyfunc hand a DataFrame (the signature is column-based);
    # a direct call of this class may pass a dict or a plain list.
    if isinstance(model_input, pd.DataFrame):
        if COLUMN not in model_input.columns:
            raise BadInput(f"no {COLUMN!r} column; got {list(model_input.columns)}")
        return list(model_input[COLUMN])
    if isinstance(model_input, dict):
        if COLUMN not in model_input:
            raise BadInput(f"no {COLUMN!r} key; got {list(model_input)}")
        return list(model_input[COLUMN])
    return list(model_input)


def png_base64(pixels: np.ndarray) -> str:
    """A (28, 28[, 1]) image in [0, 1] as base64 text of a greyscale PNG."""
    from PIL import Image

    grey = np.clip(np.rint(np.asarray(pixels).reshape(28, 28) * 255), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(grey, mode="L").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def input_example(example: np.ndarray) -> dict[str, list[str]]:
    """The model's input example: the first example image as a base64 PNG (what a user of the
    served model most likely sends)."""
    return {COLUMN: [png_base64(example[0])]}


def requirements(framework: list[str]) -> list[str]:
    """pip requirements: the framework (Keras and its backend), what the wrapper imports, and
    this project (the class and its preprocessing are imported from it)."""
    import mlflow

    pinned = [*framework, f"mlflow=={mlflow.__version__}"]
    for package in ("pandas", "numpy", "pillow"):
        pinned.append(_pinned(package))
    pinned.append(_pinned(DISTRIBUTION))
    return pinned


def _pinned(package: str) -> str:
    try:
        return f"{package}=={version(package)}"
    except PackageNotFoundError:
        return package
