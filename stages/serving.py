"""What the served model takes and gives, as plain code: any input a user has (PNG or JPEG
bytes, base64 text of them, uint8 pixels, normalised floats) turned into the (28, 28, 1)
float32 in [0, 1] the models were trained on, and ten probabilities turned into an answer.

The served model (tracking/pyfunc.py) and batch scoring (flows/score_images.py) both call
this, so an image is prepared the same way wherever it is scored.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fmnist.stages.images import SIDE, ImageError, decode_image
from fmnist.stages.load import CLASS_NAMES

SHAPES = ((SIDE, SIDE), (SIDE, SIDE, 1), (SIDE * SIDE,))
SHAPES_TEXT = "28x28, 28x28x1 or 784 values"
COLUMN = "image"  # the one input column of the served model's signature
# JSON cannot carry bytes: images come as base64 text, optionally as a data URL
# ("data:image/png;base64,...", what a browser's FileReader gives).
DATA_URL = "base64,"


class BadInput(ValueError):
    """An input the model cannot take; the message names which one and why."""


@dataclass(frozen=True)
class Answer:
    """One image's prediction."""

    class_index: int
    class_name: str
    probabilities: list[float]
    warning: str | None


def images_of(cells: Iterable[Any]) -> list[Any]:
    """The images in a column of inputs, in order.

    A cell is one image (text, bytes or an array), or a list of encoded images: MLflow's
    scoring server hands `{"inputs": ["<base64>", ...]}` to the model as a single cell that
    holds the whole list.
    """
    out: list[Any] = []
    for cell in cells:
        if isinstance(cell, (list, tuple, np.ndarray)) and _all_encoded(cell):
            out.extend(cell)
        else:
            out.append(cell)
    return out


def _all_encoded(cell: Sequence[Any] | np.ndarray) -> bool:
    # An empty list is a batch of no images, not an image of no pixels.
    if isinstance(cell, np.ndarray):
        return cell.dtype.kind in "USO" and all(isinstance(v, (str, bytes)) for v in cell.flat)
    return all(isinstance(v, (str, bytes, bytearray)) for v in cell)


def to_pixels(value: Any, label: str) -> tuple[np.ndarray, str | None]:
    """One input as (28, 28, 1) float32 in [0, 1], and a warning or None; BadInput if it is
    not an image of a form the model takes.

    Text is base64 of an encoded image; bytes are an encoded image (both converted as
    `fmnist predict` converts a file: greyscale, resized with a warning). Numbers are pixels
    of one 28x28 image: integers are 0-255 pixels; floats in [0, 1] are taken as they are,
    floats above 1 as 0-255 pixels (with a warning).
    """
    if value is None or (isinstance(value, float) and np.isnan(value)):
        raise BadInput(f"{label}: no image (null)")
    if isinstance(value, str):
        value = _unbase64(value, label)
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return decode_image(bytes(value), label)
        except ImageError as exc:
            raise BadInput(f"{exc} (expected PNG or JPEG bytes)") from exc
    return _array_pixels(value, label)


def _unbase64(text: str, label: str) -> bytes:
    head, sep, tail = text.partition(DATA_URL)
    if sep and head.startswith("data:"):
        text = tail
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadInput(f"{label}: text that is not base64 of an image ({exc})") from exc


def _array_pixels(value: Any, label: str) -> tuple[np.ndarray, str | None]:
    try:
        array = np.asarray(value)
    except ValueError as exc:  # a ragged nested list
        raise BadInput(f"{label}: not an array of pixels ({exc})") from exc
    if array.dtype.kind not in "iuf":
        raise BadInput(
            f"{label}: expected an encoded image (base64 text) or pixels ({SHAPES_TEXT}), "
            f"got {array.dtype.name} of shape {array.shape}"
        )
    if array.shape not in SHAPES:
        raise BadInput(f"{label}: array of shape {array.shape}; expected {SHAPES_TEXT}")
    if not np.isfinite(array).all():
        raise BadInput(f"{label}: pixels must be finite numbers")
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > 255:
        raise BadInput(
            f"{label}: pixels from {low:g} to {high:g}; expected 0-255 integers or 0-1 floats"
        )
    warning = None
    if array.dtype.kind in "iu":
        scaled = array.astype(np.float32) / 255.0
    elif high <= 1.0:
        scaled = array.astype(np.float32)
    else:
        # Floats of 0-255 pixels (numpy's tolist() of a float image): the model needs [0, 1].
        scaled = array.astype(np.float32) / 255.0
        warning = f"{label}: floats above 1 taken as 0-255 pixels"
    return scaled.reshape(SIDE, SIDE, 1), warning


def prepare(values: Sequence[Any]) -> tuple[np.ndarray, list[str | None]]:
    """A batch (n, 28, 28, 1) float32 and one warning (or None) per image; BadInput for an
    empty batch or for the first image the model cannot take."""
    if len(values) == 0:
        raise BadInput("empty batch: no images")
    pixels, warnings = [], []
    for i, value in enumerate(values):
        p, w = to_pixels(value, f"image {i}")
        pixels.append(p)
        warnings.append(w)
    return np.stack(pixels), warnings


def answers(probabilities: np.ndarray, warnings: Sequence[str | None]) -> list[Answer]:
    """One answer per row of probabilities: the most likely class, its name, all ten."""
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(CLASS_NAMES):
        raise ValueError(f"expected (n, {len(CLASS_NAMES)}) probabilities, got {probs.shape}")
    out = []
    for row, warning in zip(probs, warnings, strict=True):
        k = int(np.argmax(row))
        out.append(Answer(k, CLASS_NAMES[k], [float(p) for p in row], warning))
    return out
