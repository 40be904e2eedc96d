"""A tracking store with served models in it, for the serving tests and the benchmark: small
models trained for a few seconds on real Fashion-MNIST, logged as the pipeline logs them
(tracking/models.log_keras_model) and registered."""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmnist.stages.load import normalize, parse_images, parse_labels

NAME = "fashion-mnist-cnn"


@dataclass(frozen=True)
class ServedStore:
    """A SQLite store with versions of NAME registered, and the test set."""

    tracking_uri: str
    versions: list[str]
    x_test: np.ndarray  # (n, 28, 28) uint8
    y_test: np.ndarray


def fashion_mnist(debian_dir: Path, folder: Path) -> tuple[np.ndarray, ...]:
    """Train and test images (uint8) and labels from Debian's .gz files."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for stem in ("train-images", "train-labels", "t10k-images", "t10k-labels"):
        name = f"{stem}-idx{3 if 'images' in stem else 1}-ubyte"
        path = folder / name
        path.write_bytes(gzip.decompress((debian_dir / f"{name}.gz").read_bytes()))
        out.append(parse_images(path) if "images" in stem else parse_labels(path))
    return tuple(out)


def tiny_model(seed: int, hidden: int = 64):
    """A dense classifier: about 0.8 test accuracy after two epochs on 12,000 images."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def make_store(root: Path, debian_dir: Path, n_versions: int = 2, alias_first: bool = True):
    """Train n_versions small models, log each to a run of a new store under root, register
    them (version 1 gets @champion); return the store."""
    from fmnist.tracking import open_tracker

    x_train, y_train, x_test, y_test = fashion_mnist(debian_dir, root / "idx")
    tracker = open_tracker(f"sqlite:///{root}/mlflow.db", "serving", str(root / "artifacts"))
    versions = []
    for i in range(n_versions):
        model = tiny_model(seed=i, hidden=64 + 32 * i)
        model.fit(normalize(x_train[:12000]), y_train[:12000], epochs=2, batch_size=128, verbose=0)
        with tracker.run(f"tiny-{i}") as run_id:
            uri = tracker.log.keras_model(run_id, model, normalize(x_test[:8]))
        versions.append(tracker.registry.register(uri, NAME))
    if alias_first:
        tracker.registry.set_alias(NAME, "champion", versions[0])
    return ServedStore(tracker.tracking_uri, versions, x_test, y_test)
