"""The augment tasks themselves (`.fn`, no Prefect API): the number of augmented images
stored is the configured n_augmented, whatever the batch size or the number of source
images; each stored image keeps its label; the config's recipe is what is applied; the
chapter's figure is logged to the run."""

from __future__ import annotations

import numpy as np
import pytest
from prefect.logging import disable_run_logger

from fmnist.conf import load_config
from fmnist.stages.load import Dataset
from fmnist.tasks.augment import augment, augmentation_figure, read_augmented
from tests.standins import RecordingTracker

OFF = {
    "augment.rotation_degrees": 0,
    "augment.zoom": 0,
    "augment.shear_degrees": 0,
    "augment.width_shift": 0,
    "augment.height_shift": 0,
    "augment.horizontal_flip": False,
}


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    """20 distinct random images, labels 0..9 twice."""
    rng = np.random.default_rng(0)
    x = rng.random((20, 28, 28, 1), dtype=np.float32)
    y = (np.arange(20) % 10).astype(np.int32)
    return Dataset(x, y, x[:4], y[:4], "d" * 64)


def augment_now(dataset: Dataset, out_dir: str, **settings: object):
    cfg = load_config("book", {f"augment.{k}": v for k, v in settings.items()}).augment
    with disable_run_logger():
        ref = augment.fn(dataset, cfg, 7, out_dir)
    return ref, *read_augmented(ref)


@pytest.mark.parametrize(("n", "batch"), [(37, 8), (8, 64)])
def test_the_task_stores_as_many_augmented_images_as_configured(dataset, tmp_path, n, batch):
    # 37 in batches of 8 (the last one short), and 8, fewer than the 20 source images.
    ref, x, y = augment_now(dataset, str(tmp_path), n_augmented=n, batch_size=batch)
    assert x.shape == (n, 28, 28, 1) and x.dtype == np.float32
    assert y.shape == (n,)
    assert ref.path.startswith(str(tmp_path)) and ref.exists()


def test_each_stored_image_keeps_its_label_and_the_recipe_is_the_configs(dataset, tmp_path):
    # Every setting off: each stored image is one of the source images, unchanged, and its
    # label is that image's label.
    _, x, y = augment_now(
        dataset, str(tmp_path), n_augmented=30, **{k.split(".")[1]: v for k, v in OFF.items()}
    )
    flat = dataset.x_train.reshape(20, -1)
    for image, label in zip(x, y, strict=True):
        [source] = np.flatnonzero((flat == image.reshape(1, -1)).all(axis=1))
        assert dataset.y_train[source] == label
    # The chapter's recipe changes every image.
    _, changed, _ = augment_now(dataset, str(tmp_path / "chapter"), n_augmented=30)
    assert not any((flat == image.reshape(1, -1)).all(axis=1).any() for image in changed)


def test_the_chapters_figure_goes_to_the_run(dataset):
    tracker = RecordingTracker()
    cfg = load_config("book").augment
    with disable_run_logger():
        augmentation_figure.fn(dataset, cfg, 0, tracker, "parent")
    [call] = tracker.log.of("figure")
    assert call.run_id == "parent"
    assert call.args["artifact_file"] == "augmentation/first_image_variants.png"
    assert len(call.args["figure"].axes) >= 100  # a grid of the 100 variants
