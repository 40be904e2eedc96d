"""Parse IDX files with validation, then reshape and normalise for the CNNs."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
IMAGE_SIDE = 28
NUM_CLASSES = 10
TRAIN_COUNT = 60_000
TEST_COUNT = 10_000

CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


class IdxFormatError(ValueError):
    """An IDX file whose header or body is not what Fashion-MNIST's should be."""


def _header(data: bytes, path: Path, magic: int, ndim: int) -> tuple[int, ...]:
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise IdxFormatError(f"{path}: {len(data)} bytes is shorter than an IDX header")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise IdxFormatError(f"{path}: magic number {found}, expected {magic}")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = len(data) - header_len
    expected = int(np.prod(dims))
    if body != expected:
        raise IdxFormatError(
            f"{path}: header declares {dims} = {expected} bytes of data, file holds {body}"
        )
    return dims


def parse_images(path: Path, expected_count: int | None = None) -> np.ndarray:
    """Read an IDX3 image file into a (N, 28, 28) uint8 array, checking header and size."""
    data = Path(path).read_bytes()
    n, rows, cols = _header(data, path, IMAGES_MAGIC, 3)
    if (rows, cols) != (IMAGE_SIDE, IMAGE_SIDE):
        raise IdxFormatError(f"{path}: images are {rows}x{cols}, expected 28x28")
    if expected_count is not None and n != expected_count:
        raise IdxFormatError(f"{path}: {n} images, expected {expected_count}")
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, rows, cols)


def parse_labels(path: Path, expected_count: int | None = None) -> np.ndarray:
    """Read an IDX1 label file into an (N,) uint8 array of values 0-9."""
    data = Path(path).read_bytes()
    (n,) = _header(data, path, LABELS_MAGIC, 1)
    if expected_count is not None and n != expected_count:
        raise IdxFormatError(f"{path}: {n} labels, expected {expected_count}")
    labels = np.frombuffer(data, dtype=np.uint8, offset=8)
    if labels.size and labels.max() >= NUM_CLASSES:
        bad = int(np.argmax(labels >= NUM_CLASSES))
        raise IdxFormatError(f"{path}: label {labels[bad]} at index {bad} is outside 0-9")
    return labels


def normalize(images: np.ndarray) -> np.ndarray:
    """(N, 28, 28) uint8 -> (N, 28, 28, 1) float32 in [0, 1]."""
    return (images.astype(np.float32) / 255.0)[..., np.newaxis]


@dataclass(frozen=True)
class Dataset:
    """The arrays the models train and are tested on, and a digest of their content."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    digest: str

    @property
    def sizes(self) -> dict[str, int]:
        """Sample counts, for logs and params."""
        return {"train": len(self.y_train), "test": len(self.y_test)}


def _subset(n_total: int, n: int | None, rng: np.random.Generator) -> np.ndarray | None:
    if n is None or n >= n_total:
        return None
    # Sorted so the subset keeps the file's (already shuffled) order.
    return np.sort(rng.choice(n_total, size=n, replace=False))


def load_dataset(
    paths: dict[str, Path],
    *,
    train_subset: int | None = None,
    test_subset: int | None = None,
    seed: int = 42,
) -> Dataset:
    """Parse the four files, take seeded subsets if asked, normalise, and digest the result."""
    x_train = parse_images(paths["train-images-idx3-ubyte"], TRAIN_COUNT)
    y_train = parse_labels(paths["train-labels-idx1-ubyte"], TRAIN_COUNT)
    x_test = parse_images(paths["t10k-images-idx3-ubyte"], TEST_COUNT)
    y_test = parse_labels(paths["t10k-labels-idx1-ubyte"], TEST_COUNT)

    rng = np.random.default_rng(seed)
    if (idx := _subset(TRAIN_COUNT, train_subset, rng)) is not None:
        x_train, y_train = x_train[idx], y_train[idx]
    if (idx := _subset(TEST_COUNT, test_subset, rng)) is not None:
        x_test, y_test = x_test[idx], y_test[idx]

    # Digest the uint8 content actually used: two runs share a digest only if they train
    # and test on the very same images and labels.
    h = hashlib.sha256()
    for arr in (x_train, y_train, x_test, y_test):
        h.update(np.ascontiguousarray(arr).tobytes())
    return Dataset(
        x_train=normalize(x_train),
        y_train=y_train.astype(np.int32),
        x_test=normalize(x_test),
        y_test=y_test.astype(np.int32),
        digest=h.hexdigest(),
    )
