"""Reading user images for prediction: greyscale, 28x28, scaled like the training data.

One conversion for every way an image arrives: a file (`fmnist predict`), or encoded bytes
(PNG, JPEG, ... sent to the served model, stages/serving.py).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

SIDE = 28
# A small PNG can decode to gigapixels (a decompression bomb); nothing this large is a
# clothing photo worth shrinking to 28x28, so it is refused before it is decoded.
MAX_PIXELS = 4096 * 4096


class ImageError(ValueError):
    """A file (or bytes) that is not a readable image."""


def read_image(path: Path) -> tuple[np.ndarray, str | None]:
    """Load an image as (28, 28, 1) float32 in [0, 1]; return it and a warning, if any.

    Colour is converted to greyscale; another size is resized (bilinear), with a warning,
    since the models only ever saw 28x28 images. Fashion-MNIST items are light on a dark
    background: a photo on a white background will be classified poorly.
    """
    try:
        with open(path, "rb") as file:
            return _decode(file, str(path))
    except OSError as exc:
        raise ImageError(f"{path}: cannot read image: {exc}") from exc


def decode_image(data: bytes, label: str) -> tuple[np.ndarray, str | None]:
    """Encoded image bytes (PNG, JPEG, ...) converted as read_image converts a file; label
    names the image in the warning and in the error."""
    return _decode(io.BytesIO(data), label)


def _decode(file: Any, label: str) -> tuple[np.ndarray, str | None]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as img:
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise ImageError(
                    f"{label}: {width}x{height} image is too large (at most {MAX_PIXELS} pixels)"
                )
            grey = img.convert("L")
            warning = None
            if grey.size != (SIDE, SIDE):
                warning = f"{label}: {width}x{height} resized to 28x28"
                grey = grey.resize((SIDE, SIDE), Image.Resampling.BILINEAR)
            pixels = np.asarray(grey, dtype=np.float32) / 255.0
    except UnidentifiedImageError as exc:  # its message names a BytesIO object
        raise ImageError(f"{label}: cannot read image: not an image format PIL reads") from exc
    except ImageError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{label}: cannot read image: {exc}") from exc
    return pixels[..., np.newaxis], warning
