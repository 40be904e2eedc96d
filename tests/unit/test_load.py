"""IDX parsing and validation, normalisation, and loading the real dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fmnist.stages.download import fetch_all
from fmnist.stages.load import (
    CLASS_NAMES,
    IMAGES_MAGIC,
    LABELS_MAGIC,
    IdxFormatError,
    load_dataset,
    normalize,
    parse_images,
    parse_labels,
)
from tests.helpers import idx_bytes


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_parse_images_round_trip(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    path = write(tmp_path, "img", idx_bytes(images, IMAGES_MAGIC))
    parsed = parse_images(path, expected_count=5)
    assert parsed.shape == (5, 28, 28)
    assert np.array_equal(parsed, images)


def test_parse_labels_round_trip(tmp_path):
    labels = np.arange(10, dtype=np.uint8)
    path = write(tmp_path, "lab", idx_bytes(labels, LABELS_MAGIC))
    assert np.array_equal(parse_labels(path, expected_count=10), labels)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (idx_bytes(np.zeros((2, 28, 28), np.uint8), LABELS_MAGIC), "magic number 2049"),
        (idx_bytes(np.zeros((2, 28, 28), np.uint8), IMAGES_MAGIC)[:-1], "file holds 1567"),
        (idx_bytes(np.zeros((2, 28, 28), np.uint8), IMAGES_MAGIC) + b"\0", "file holds 1569"),
        (idx_bytes(np.zeros((2, 32, 32), np.uint8), IMAGES_MAGIC), "32x32, expected 28x28"),
        (b"\0\0\x08", "shorter than an IDX header"),
    ],
    ids=["wrong-magic", "truncated", "trailing-bytes", "wrong-size", "no-header"],
)
def test_corrupt_image_files_are_rejected(tmp_path, data, message):
    path = write(tmp_path, "bad", data)
    with pytest.raises(IdxFormatError, match=message) as info:
        parse_images(path)
    assert str(path) in str(info.value)


def test_image_count_is_checked(tmp_path):
    path = write(tmp_path, "img", idx_bytes(np.zeros((3, 28, 28), np.uint8), IMAGES_MAGIC))
    with pytest.raises(IdxFormatError, match="3 images, expected 60000"):
        parse_images(path, expected_count=60_000)


def test_labels_outside_0_to_9_are_rejected(tmp_path):
    labels = np.array([1, 2, 10, 3], dtype=np.uint8)
    path = write(tmp_path, "lab", idx_bytes(labels, LABELS_MAGIC))
    with pytest.raises(IdxFormatError, match="label 10 at index 2"):
        parse_labels(path)


def test_label_count_is_checked(tmp_path):
    path = write(tmp_path, "lab", idx_bytes(np.zeros(7, np.uint8), LABELS_MAGIC))
    with pytest.raises(IdxFormatError, match="7 labels, expected 10000"):
        parse_labels(path, expected_count=10_000)


def test_normalize_shapes_and_scales():
    images = np.array([[[0] * 28] * 28, [[255] * 28] * 28], dtype=np.uint8)
    out = normalize(images)
    assert out.shape == (2, 28, 28, 1)
    assert out.dtype == np.float32
    assert out[0].max() == 0.0 and out[1].min() == 1.0


@pytest.fixture(scope="module")
def real_paths(tmp_path_factory, debian_dir):
    return fetch_all([str(debian_dir)], tmp_path_factory.mktemp("cache"))


def test_real_dataset_loads_with_expected_shapes(real_paths):
    ds = load_dataset(real_paths)
    assert ds.x_train.shape == (60_000, 28, 28, 1)
    assert ds.x_test.shape == (10_000, 28, 28, 1)
    assert ds.x_train.dtype == np.float32
    assert ds.x_train.min() >= 0.0 and ds.x_train.max() <= 1.0
    # Fashion-MNIST is balanced: each class has 6,000 training and 1,000 test images.
    assert np.bincount(ds.y_train).tolist() == [6_000] * len(CLASS_NAMES)
    assert np.bincount(ds.y_test).tolist() == [1_000] * len(CLASS_NAMES)


def test_subsets_are_seeded(real_paths):
    a = load_dataset(real_paths, train_subset=300, test_subset=100, seed=1)
    b = load_dataset(real_paths, train_subset=300, test_subset=100, seed=1)
    c = load_dataset(real_paths, train_subset=300, test_subset=100, seed=2)
    assert a.sizes == {"train": 300, "test": 100}
    assert a.digest == b.digest and np.array_equal(a.x_train, b.x_train)
    assert a.digest != c.digest
    full = load_dataset(real_paths)
    assert full.digest not in (a.digest, c.digest)


@pytest.mark.parametrize("shape", [(2, 28, 27), (2, 27, 28), (2, 29, 28)])
def test_an_image_size_check_looks_at_both_dimensions(tmp_path, shape):
    path = write(tmp_path, "img", idx_bytes(np.zeros(shape, np.uint8), IMAGES_MAGIC))
    with pytest.raises(IdxFormatError, match=f"{shape[1]}x{shape[2]}, expected 28x28"):
        parse_images(path)


def test_counts_are_checked_only_when_expected(tmp_path):
    images = write(tmp_path, "img", idx_bytes(np.zeros((3, 28, 28), np.uint8), IMAGES_MAGIC))
    labels = write(tmp_path, "lab", idx_bytes(np.zeros(3, np.uint8), LABELS_MAGIC))
    assert parse_images(images).shape == (3, 28, 28)
    assert parse_images(images, expected_count=3).shape == (3, 28, 28)
    assert parse_labels(labels).shape == (3,)
    assert parse_labels(labels, expected_count=3).shape == (3,)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (idx_bytes(np.zeros(4, np.uint8), IMAGES_MAGIC), "magic number 2051, expected 2049"),
        (idx_bytes(np.zeros(4, np.uint8), LABELS_MAGIC)[:-1], "declares \\(4,\\) = 4 bytes"),
        (b"\0\0\x08\x01\0\0", "6 bytes is shorter than an IDX header"),
    ],
    ids=["wrong-magic", "truncated", "no-header"],
)
def test_corrupt_label_files_are_rejected(tmp_path, data, message):
    path = write(tmp_path, "bad", data)
    with pytest.raises(IdxFormatError, match=message) as info:
        parse_labels(path)
    assert str(path) in str(info.value)


def test_label_9_is_valid_and_10_is_not(tmp_path):
    ok = write(tmp_path, "ok", idx_bytes(np.array([9, 0, 9], np.uint8), LABELS_MAGIC))
    assert parse_labels(ok).tolist() == [9, 0, 9]
    bad = write(tmp_path, "bad", idx_bytes(np.array([0, 0, 0, 255], np.uint8), LABELS_MAGIC))
    with pytest.raises(IdxFormatError, match="label 255 at index 3"):
        parse_labels(bad)


def test_an_empty_label_file_is_valid(tmp_path):
    path = write(tmp_path, "lab", idx_bytes(np.zeros(0, np.uint8), LABELS_MAGIC))
    assert parse_labels(path).shape == (0,)


def test_a_header_exactly_as_long_as_declared_is_accepted(tmp_path):
    # 0 images of 28x28: the smallest valid file, 16 bytes of header and nothing else.
    path = write(tmp_path, "img", idx_bytes(np.zeros((0, 28, 28), np.uint8), IMAGES_MAGIC))
    assert parse_images(path).shape == (0, 28, 28)


def test_normalize_divides_by_255():
    images = np.array([[[51] * 28] * 28], dtype=np.uint8)
    assert normalize(images)[0, 0, 0, 0] == pytest.approx(0.2)


def test_labels_are_int32_and_images_float32(real_paths):
    ds = load_dataset(real_paths, train_subset=50, test_subset=50)
    assert ds.y_train.dtype == np.int32 and ds.y_test.dtype == np.int32
    assert ds.x_train.dtype == np.float32 and ds.x_test.dtype == np.float32


def test_a_subset_as_large_as_the_set_is_the_whole_set(real_paths):
    # It draws nothing, so the test subset drawn after it is the one drawn without it.
    whole = load_dataset(real_paths, train_subset=60_000, test_subset=100, seed=5)
    none = load_dataset(real_paths, train_subset=None, test_subset=100, seed=5)
    assert whole.digest == none.digest
    assert np.array_equal(whole.y_test, none.y_test)


def test_the_default_seed_is_42(real_paths):
    default = load_dataset(real_paths, train_subset=100, test_subset=100)
    seeded = load_dataset(real_paths, train_subset=100, test_subset=100, seed=42)
    assert default.digest == seeded.digest


def _distinct_rows(images: np.ndarray) -> int:
    flat = np.ascontiguousarray(images.reshape(len(images), -1))
    return len(np.unique(flat.view(np.dtype((np.void, flat.itemsize * flat.shape[1])))))


def test_a_subset_draws_without_replacement(real_paths):
    # All but one training image: at most one distinct image is missing from the subset.
    full = load_dataset(real_paths, test_subset=10)
    almost = load_dataset(real_paths, train_subset=59_999, test_subset=10)
    assert _distinct_rows(almost.x_train) >= _distinct_rows(full.x_train) - 1


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("train-images-idx3-ubyte", "images"),
        ("train-labels-idx1-ubyte", "labels"),
        ("t10k-images-idx3-ubyte", "images"),
        ("t10k-labels-idx1-ubyte", "labels"),
    ],
)
def test_load_dataset_checks_the_count_of_each_file(real_paths, tmp_path, name, kind):
    if kind == "images":
        small = idx_bytes(np.zeros((3, 28, 28), np.uint8), IMAGES_MAGIC)
    else:
        small = idx_bytes(np.zeros(3, np.uint8), LABELS_MAGIC)
    paths = {**real_paths, name: write(tmp_path, name, small)}
    with pytest.raises(IdxFormatError, match=f"{name}: 3 {kind}, expected"):
        load_dataset(paths)
