"""Augmentation: shapes, labels kept with their images, seeded determinism, the recipe."""

from __future__ import annotations

import numpy as np
import pytest

from conf import load_config
from stages.augment import AugmentParams, augment_dataset, build_augmenter, variants_of
from tests.conftest import augment_params

# The chapter's recipe, as the pipeline builds it from the book profile.
CHAPTER = augment_params()
NO_CHANGE = augment_params(
    rotation_degrees=0,
    zoom=0,
    shear_degrees=0,
    width_shift=0,
    height_shift=0,
    horizontal_flip=False,
)


def constant_images(labels: np.ndarray) -> np.ndarray:
    """One flat grey image per label, brightness (label + 0.5) / 10: geometric transforms
    with nearest fill keep a flat image flat, so the label can be read back off the pixels."""
    values = (labels.astype(np.float32) + 0.5) / 10.0
    return np.broadcast_to(values[:, None, None, None], (len(labels), 28, 28, 1)).copy()


def test_shapes_and_labels_travel_with_their_images():
    y = np.arange(10, dtype=np.int32).repeat(3)
    x = constant_images(y)
    # 50 drawn from 30: only possible with replacement.
    x_aug, y_aug = augment_dataset(x, y, 50, CHAPTER, seed=7, batch_size=16)
    assert x_aug.shape == (50, 28, 28, 1) and x_aug.dtype == np.float32
    assert y_aug.shape == (50,)
    read_back = np.floor(x_aug.mean(axis=(1, 2, 3)) * 10).astype(np.int32)
    assert np.array_equal(read_back, y_aug)


def test_same_seed_same_images_other_seed_other_images():
    rng = np.random.default_rng(0)
    x = rng.random((40, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 40).astype(np.int32)
    a = augment_dataset(x, y, 64, CHAPTER, seed=3, batch_size=32)
    b = augment_dataset(x, y, 64, CHAPTER, seed=3, batch_size=32)
    c = augment_dataset(x, y, 64, CHAPTER, seed=4, batch_size=32)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_images_are_actually_transformed_and_stay_in_range():
    rng = np.random.default_rng(1)
    image = rng.random((28, 28, 1), dtype=np.float32)
    variants = variants_of(image, 100, CHAPTER, seed=0)
    assert variants.shape == (100, 28, 28, 1)
    assert variants.min() >= 0.0 and variants.max() <= 1.0
    changed = np.abs(variants - image).reshape(100, -1).max(axis=1) > 1e-3
    assert changed.all()
    # Each variant is a different random draw.
    assert len({v.tobytes() for v in variants}) == 100


def test_flip_is_horizontal_only():
    rng = np.random.default_rng(2)
    image = rng.random((28, 28, 1), dtype=np.float32)
    only_flip = AugmentParams(**{**NO_CHANGE.__dict__, "horizontal_flip": True})
    variants = variants_of(image, 64, only_flip, seed=5)
    mirrored = image[:, ::-1, :]
    is_same = [np.allclose(v, image) for v in variants]
    is_mirror = [np.allclose(v, mirrored) for v in variants]
    assert all(s or m for s, m in zip(is_same, is_mirror, strict=True))
    assert 0 < sum(is_mirror) < 64  # about half flipped
    assert not any(np.allclose(v, image[::-1]) for v in variants)  # never upside down


def test_recipe_layers_match_the_chapter():
    aug = build_augmenter(CHAPTER, seed=0)
    by_type = {type(layer).__name__: layer for layer in aug.layers}
    assert set(by_type) == {
        "RandomRotation",
        "RandomZoom",
        "RandomShear",
        "RandomTranslation",
        "RandomFlip",
    }
    assert by_type["RandomRotation"].factor == pytest.approx((-10 / 360, 10 / 360))
    assert by_type["RandomZoom"].height_factor == pytest.approx((-0.1, 0.1))
    assert by_type["RandomZoom"].width_factor == pytest.approx((-0.1, 0.1))
    shift = by_type["RandomTranslation"]
    assert (shift.height_lower, shift.height_upper) == pytest.approx((-0.1, 0.1))
    assert (shift.width_lower, shift.width_upper) == pytest.approx((-0.1, 0.1))
    shear = np.tan(np.radians(0.5))  # RandomShear takes the shear coefficient, tan(angle)
    assert by_type["RandomShear"].x_factor == pytest.approx((-shear, shear))
    assert by_type["RandomShear"].y_factor == pytest.approx((0.0, 0.0))
    assert by_type["RandomFlip"].mode == "horizontal"


def test_book_profile_makes_90000_training_images():
    cfg = load_config("book")
    assert (cfg.data.train_subset or 60_000) + cfg.augment.n_augmented == 90_000


def test_empty_or_mismatched_input_is_an_error():
    with pytest.raises(ValueError, match="no images"):
        augment_dataset(np.zeros((0, 28, 28, 1), np.float32), np.zeros(0), 5, NO_CHANGE, seed=0)
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        augment_dataset(np.zeros((3, 28, 28, 1), np.float32), np.zeros(2), 5, NO_CHANGE, seed=0)
