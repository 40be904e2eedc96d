"""Reading user images for prediction: greyscale, 28x28, scaled like the training data."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SIDE = 28


class ImageError(ValueError):
    """A file that is not a readable image."""


def read_image(path: Path) -> tuple[np.ndarray, str | None]:
    """Load an image as (28, 28, 1) float32 in [0, 1]; return it and a warning, if any.

    Colour is converted to greyscale; another size is resized (bilinear), with a warning,
    since the models only ever saw 28x28 images. Fashion-MNIST items are light on a dark
    background: a photo on a white background will be classified poorly.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            grey = img.convert("L")
            warning = None
            if grey.size != (SIDE, SIDE):
                warning = f"{path}: {grey.size[0]}x{grey.size[1]} resized to 28x28"
                grey = grey.resize((SIDE, SIDE), Image.Resampling.BILINEAR)
            pixels = np.asarray(grey, dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ImageError(f"{path}: cannot read image: {exc}") from exc
    return pixels[..., np.newaxis], warning
