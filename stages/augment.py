"""Augmentation stage: the chapter's ImageDataGenerator recipe, rebuilt from Keras 3 layers.

Plain keras + numpy. Images are transformed a batch at a time by a Sequential of Random*
layers: no Python loop per image.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from fmnist.stages.params import FromSettings


@dataclass(frozen=True)
class Augmented:
    """Augmented training images, with the SHA-256 of the file they were stored in."""

    x: np.ndarray
    y: np.ndarray
    sha256: str


@dataclass(frozen=True)
class AugmentParams(FromSettings):
    """The recipe, in the chapter's units (degrees, fractions); its values come from the config
    (conf/schema.py holds the defaults, conf/book.yaml the chapter's settings)."""

    rotation_degrees: float
    zoom: float
    shear_degrees: float
    width_shift: float
    height_shift: float
    horizontal_flip: bool
    vertical_flip: bool
    fill_mode: str


def build_augmenter(params: AugmentParams, seed: int):
    """A keras.Sequential of preprocessing layers equivalent to the chapter's generator."""
    import keras
    from keras import layers

    # Each layer gets its own seed so that they do not draw the same random stream.
    seeds = itertools.count(seed)
    stack: list[keras.Layer] = []
    if params.rotation_degrees:
        # RandomRotation takes a fraction of a full turn.
        stack.append(
            layers.RandomRotation(
                params.rotation_degrees / 360.0, fill_mode=params.fill_mode, seed=next(seeds)
            )
        )
    if params.zoom:
        # ImageDataGenerator zooms height and width independently in [1-z, 1+z].
        stack.append(
            layers.RandomZoom(
                (-params.zoom, params.zoom),
                (-params.zoom, params.zoom),
                fill_mode=params.fill_mode,
                seed=next(seeds),
            )
        )
    if params.shear_degrees:
        # RandomShear's factor is the shear coefficient, i.e. tan(angle); the generator
        # sheared along one axis only.
        stack.append(
            layers.RandomShear(
                x_factor=math.tan(math.radians(params.shear_degrees)),
                y_factor=0.0,
                fill_mode=params.fill_mode,
                seed=next(seeds),
            )
        )
    if params.width_shift or params.height_shift:
        stack.append(
            layers.RandomTranslation(
                params.height_shift,
                params.width_shift,
                fill_mode=params.fill_mode,
                seed=next(seeds),
            )
        )
    flip = {
        (True, False): "horizontal",
        (False, True): "vertical",
        (True, True): "horizontal_and_vertical",
    }.get((params.horizontal_flip, params.vertical_flip))
    if flip:
        stack.append(layers.RandomFlip(flip, seed=next(seeds)))
    if not stack:  # every setting off: images pass unchanged (Keras cannot call an empty one)
        stack.append(layers.Identity())
    return keras.Sequential(stack, name="chapter_augmentation")


def augment_images(
    images: np.ndarray, params: AugmentParams, *, seed: int, batch_size: int = 1024
) -> np.ndarray:
    """Apply one random draw of the recipe to every image, batch by batch."""
    import keras

    augmenter = build_augmenter(params, seed)
    out = np.empty_like(images, dtype=np.float32)
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        out[start : start + len(batch)] = keras.ops.convert_to_numpy(
            augmenter(batch, training=True)
        )
    # Bilinear interpolation can overshoot by a rounding error; keep [0, 1] exact.
    return np.clip(out, 0.0, 1.0, out=out)


def augment_dataset(
    x: np.ndarray,
    y: np.ndarray,
    n_augmented: int,
    params: AugmentParams,
    *,
    seed: int,
    batch_size: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw n_augmented source indices with replacement and return (images, their labels)."""
    if len(x) != len(y):
        raise ValueError(f"{len(x)} images but {len(y)} labels")
    if len(x) == 0:
        raise ValueError("no images to augment")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=n_augmented)
    return augment_images(x[idx], params, seed=seed, batch_size=batch_size), y[idx].copy()


def variants_of(image: np.ndarray, n: int, params: AugmentParams, *, seed: int) -> np.ndarray:
    """n augmented variants of one (28, 28, 1) image: the chapter's 10x10 figure."""
    return augment_images(np.repeat(image[np.newaxis], n, axis=0), params, seed=seed)
