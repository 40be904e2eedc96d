"""Choosing the Keras backend (tensorflow, jax, torch) before keras is imported.

Keras reads KERAS_BACKEND once, at its first import: every process that trains calls
`apply_backend` before anything imports keras. It also sets how the backend takes GPU
memory, so that several training processes can share a card: TensorFlow grows its
allocation as needed, JAX does not preallocate 75 % of the card at start-up.

Plain Python (no keras import here), so the CLI can call it first thing.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Literal, get_args

KerasBackend = Literal["tensorflow", "jax", "torch"]
BACKENDS: tuple[str, ...] = get_args(KerasBackend)

# The package each backend needs, and the extra of this project that installs it.
_PACKAGES = {
    "tensorflow": ("tensorflow", "-e . (tensorflow is a dependency)"),
    "jax": ("jax", "-e '.[jax]' (or '.[gpu]' on a CUDA machine)"),
    "torch": ("torch", "torch (see https://pytorch.org for the CUDA wheels)"),
}

# Memory settings for processes that share a GPU; an operator's own value is kept.
MEMORY_ENV = {
    "TF_FORCE_GPU_ALLOW_GROWTH": "true",
    "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
}


class BackendError(RuntimeError):
    """A backend that is unknown, not installed, or not the one keras already runs on."""


def resolve_backend(configured: str, *, explicit: bool = False) -> str:
    """The backend to use: an explicit choice, else KERAS_BACKEND, else the profile's.

    The environment wins over the profile, as MLFLOW_TRACKING_URI does: a work pool (its
    job variables) or CI can pin the backend its machines have installed. A choice given
    explicitly (an override on the command line) wins over both.
    """
    if explicit:
        return configured
    return os.environ.get("KERAS_BACKEND") or configured


def apply_backend(name: str) -> str:
    """Set KERAS_BACKEND and the GPU memory settings; fail clearly if that cannot hold."""
    if name not in BACKENDS:
        raise BackendError(f"unknown Keras backend {name!r}; choose one of {', '.join(BACKENDS)}")
    package, install = _PACKAGES[name]
    if importlib.util.find_spec(package) is None:
        raise BackendError(
            f"keras_backend={name} but {package} is not installed: pip install {install}"
        )
    keras = sys.modules.get("keras")
    if keras is not None:
        # Too late to switch: keras has read its backend already.
        current = keras.backend.backend()
        if current != name:
            raise BackendError(
                f"keras is already imported with the {current!r} backend; {name!r} must be "
                "chosen before anything imports keras (set KERAS_BACKEND, or call "
                "apply_backend first)"
            )
    os.environ["KERAS_BACKEND"] = name
    for key, value in MEMORY_ENV.items():
        os.environ.setdefault(key, value)
    # TensorFlow's C++ start-up chatter hides the pipeline's own logs.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return name
