"""Augmentation: shapes, labels kept with their images, seeded determinism, the recipe."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest

from fmnist.conf import load_config
from fmnist.stages.augment import (
    AugmentParams,
    augment_dataset,
    augment_images,
    build_augmenter,
    variants_of,
)
from fmnist.tasks.augment import augment_params as recipe_of_config
from tests.helpers import augment_params

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
    assert aug.name == "chapter_augmentation"  # as the model summary and errors show it
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
    with pytest.raises(ValueError, match=r"^no images to augment$"):
        augment_dataset(np.zeros((0, 28, 28, 1), np.float32), np.zeros(0), 5, NO_CHANGE, seed=0)
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        augment_dataset(np.zeros((3, 28, 28, 1), np.float32), np.zeros(2), 5, NO_CHANGE, seed=0)


def recipe(**changes) -> AugmentParams:
    """The chapter's recipe with some settings changed."""
    return AugmentParams.of({**CHAPTER.__dict__, **changes})


@pytest.mark.parametrize("fill_mode", ["reflect", "wrap", "constant", "nearest"])
def test_every_geometric_layer_keeps_the_fill_mode(fill_mode):
    aug = build_augmenter(recipe(fill_mode=fill_mode), seed=0)
    geometric = [layer for layer in aug.layers if type(layer).__name__ != "RandomFlip"]
    assert len(geometric) == 4
    assert {layer.fill_mode for layer in geometric} == {fill_mode}


def test_fill_mode_changes_the_images():
    # A bright band at the left edge: a shift fills the uncovered border from the edge
    # (nearest) or with zeros (constant); only the fill differs.
    image = np.zeros((28, 28, 1), np.float32)
    image[:, :4] = 1.0
    shift_only = {**NO_CHANGE.__dict__, "width_shift": 0.3}
    nearest = variants_of(
        image, 16, AugmentParams.of({**shift_only, "fill_mode": "nearest"}), seed=1
    )
    constant = variants_of(
        image, 16, AugmentParams.of({**shift_only, "fill_mode": "constant"}), seed=1
    )
    assert not np.allclose(nearest, constant)


def test_each_layer_draws_its_own_random_stream():
    aug = build_augmenter(recipe(vertical_flip=True), seed=10)
    seeds = [layer.seed for layer in aug.layers]
    assert len(seeds) == 5 and len(set(seeds)) == 5
    other = build_augmenter(recipe(vertical_flip=True), seed=11)
    assert [layer.seed for layer in other.layers] != seeds


@pytest.mark.parametrize(
    ("horizontal", "vertical", "mode"),
    [
        (True, False, "horizontal"),
        (False, True, "vertical"),
        (True, True, "horizontal_and_vertical"),
        (False, False, None),
    ],
)
def test_flip_layer_follows_the_recipe(horizontal, vertical, mode):
    params = recipe(horizontal_flip=horizontal, vertical_flip=vertical)
    flips = [type(x).__name__ for x in build_augmenter(params, seed=0).layers]
    modes = [
        x.mode for x in build_augmenter(params, seed=0).layers if type(x).__name__ == "RandomFlip"
    ]
    assert modes == ([mode] if mode else [])
    assert len(flips) == 4 + bool(mode)


@pytest.mark.parametrize(
    ("setting", "layer"),
    [
        ("rotation_degrees", "RandomRotation"),
        ("zoom", "RandomZoom"),
        ("shear_degrees", "RandomShear"),
    ],
)
def test_a_zero_setting_leaves_its_layer_out(setting, layer):
    names = [type(x).__name__ for x in build_augmenter(recipe(**{setting: 0}), 0).layers]
    assert layer not in names and len(names) == 4


def test_a_shift_layer_is_kept_while_either_shift_is_set():
    def shift(width: float, height: float) -> list:
        params = recipe(width_shift=width, height_shift=height)
        layers = build_augmenter(params, 0).layers
        return [x for x in layers if type(x).__name__ == "RandomTranslation"]

    assert shift(0, 0) == []
    [only_width] = shift(0.2, 0)
    assert (only_width.width_lower, only_width.width_upper) == pytest.approx((-0.2, 0.2))
    assert (only_width.height_lower, only_width.height_upper) == pytest.approx((0.0, 0.0))
    [only_height] = shift(0, 0.3)
    assert (only_height.height_lower, only_height.height_upper) == pytest.approx((-0.3, 0.3))


def test_the_recipe_uses_the_chapter_degrees_not_radians():
    params = recipe(rotation_degrees=90, shear_degrees=45)
    by_type = {type(x).__name__: x for x in build_augmenter(params, 0).layers}
    assert by_type["RandomRotation"].factor == pytest.approx((-0.25, 0.25))
    assert by_type["RandomShear"].x_factor == pytest.approx((-1.0, 1.0))


def test_batches_cover_every_image():
    # 10 images in batches of 4: the last batch is short; every output slot is written.
    y = np.arange(10, dtype=np.int32)
    out = augment_images(constant_images(y), CHAPTER, seed=0, batch_size=4)
    read_back = np.floor(out.mean(axis=(1, 2, 3)) * 10).astype(np.int32)
    assert np.array_equal(read_back, y)


def test_every_source_image_can_be_drawn():
    y = np.array([0, 1], dtype=np.int32)
    _, y_aug = augment_dataset(constant_images(y), y, 64, recipe(rotation_degrees=1), seed=0)
    assert set(y_aug.tolist()) == {0, 1}


def test_the_config_to_recipe_mapping_keeps_every_setting():
    # Every recipe setting comes from the config, under the same name, with its value.
    overrides = {
        "augment.rotation_degrees": 7.0,
        "augment.zoom": 0.2,
        "augment.shear_degrees": 3.0,
        "augment.width_shift": 0.05,
        "augment.height_shift": 0.15,
        "augment.horizontal_flip": False,
        "augment.vertical_flip": True,
        "augment.fill_mode": "reflect",
    }
    # The mapping the augment task uses (tasks/augment.py), not a copy of its expression.
    params = recipe_of_config(load_config("book", overrides).augment)
    names = {f.name for f in fields(AugmentParams)}
    assert names == {key.removeprefix("augment.") for key in overrides}
    book = recipe_of_config(load_config("book").augment)
    for key, value in overrides.items():
        name = key.removeprefix("augment.")
        assert getattr(book, name) != value, f"{key}: pick a value other than the book's"
        assert getattr(params, name) == value, key


def random_images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 28, 28, 1), dtype=np.float32)


def test_each_batch_is_one_call_of_the_augmenter():
    # One batch: exactly what the recipe's layers give for the whole batch in one call, so
    # no image is augmented twice (each call draws again) or left out.
    x = random_images(6)
    direct = np.asarray(build_augmenter(CHAPTER, seed=5)(x, training=True))
    assert np.allclose(augment_images(x, CHAPTER, seed=5, batch_size=6), np.clip(direct, 0, 1))


def test_the_batch_size_reaches_the_augmenter():
    # The same source draw augmented in batches of 2 and of 4 gets different random draws.
    y = np.zeros(8, dtype=np.int32)
    x = random_images(8)
    a, _ = augment_dataset(x, y, 8, CHAPTER, seed=1, batch_size=2)
    idx = np.random.default_rng(1).integers(0, 8, size=8)
    assert np.array_equal(a, augment_images(x[idx], CHAPTER, seed=1, batch_size=2))
    assert not np.array_equal(a, augment_images(x[idx], CHAPTER, seed=1, batch_size=4))


def test_output_is_float32_whatever_the_input():
    out = augment_images(random_images(3).astype(np.float64), NO_CHANGE, seed=0)
    assert out.dtype == np.float32


def test_output_is_kept_in_the_unit_range():
    # Interpolation may overshoot [0, 1] a little; what comes out is always inside it.
    x = random_images(4) * 3.0 - 1.0  # values from -1 to 2
    out = augment_images(x, NO_CHANGE, seed=0)
    assert out.min() == 0.0 and out.max() == 1.0
    inside = (x > 0) & (x < 1)
    assert np.allclose(out[inside], x[inside])


def test_a_recipe_with_every_setting_off_leaves_images_unchanged():
    x = random_images(5)
    assert np.array_equal(augment_images(x, NO_CHANGE, seed=0), x)
