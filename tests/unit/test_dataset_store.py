"""The prepared dataset's way to a training worker (tasks/dataset.py): through the tracking
server's artifact store by default when there is a server, or a folder / fsspec URL; fetched
once per machine into the cache (FMNIST_DATASET_CACHE) and verified against its SHA-256."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from fmnist.stages.store import (
    CorruptEntry,
    DatasetRef,
    cached_dataset,
    cached_name,
    resolve_store,
)
from fmnist.tasks import dataset as dataset_store
from fmnist.tracking import open_tracker


def arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.random((4, 28, 28, 1), dtype=np.float32), "digest": np.array("abc")}


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("FMNIST_DATASET_CACHE", str(folder))
    return folder


def test_auto_is_the_tracking_server_when_there_is_one():
    assert resolve_store("auto", "https://mlflow.example:5443") == "mlflow"
    assert resolve_store("auto", "http://127.0.0.1:5000") == "mlflow"
    assert resolve_store("auto", "sqlite:///mlruns/mlflow.db") == "data/store"
    assert resolve_store("s3://bucket/x", "https://mlflow.example") == "s3://bucket/x"


def test_through_the_tracking_store_once_per_machine(tmp_path: Path, cache: Path):
    """Published as an artifact of the pipeline's run (a runs:/ URI no address is baked
    into); fetched by digest into the cache; the second fetch needs no store at all."""
    tracker = open_tracker(
        f"sqlite:///{tmp_path}/mlflow.db", "datasets", str(tmp_path / "artifacts")
    )
    run_id = tracker.start_run("pipeline")
    ref = dataset_store.publish("mlflow", arrays(1), tracker, run_id)
    assert ref.uri == f"runs:/{run_id}/datasets/{cached_name(ref.sha256)}"
    assert dataset_store.publish("mlflow", arrays(1), tracker, run_id) == ref  # idempotent
    shutil.rmtree(cache)  # the publisher's own copy: gone, so the fetch below downloads
    back = dataset_store.fetch(ref, tracker.tracking_uri)
    assert np.array_equal(back["x"], arrays(1)["x"])
    assert (cache / cached_name(ref.sha256)).is_file()
    with pytest.raises(CorruptEntry):  # a wrong digest is never served
        dataset_store.fetch(DatasetRef(ref.uri, "0" * 64), tracker.tracking_uri)
    shutil.rmtree(tmp_path / "artifacts")  # the store is gone: the cache serves
    assert np.array_equal(dataset_store.fetch(ref, tracker.tracking_uri)["x"], arrays(1)["x"])


def test_an_fsspec_store_goes_through_the_cache_too(cache: Path):
    ref = dataset_store.publish("memory://fmnist-cache-test", arrays(2), None, "")
    import fsspec

    assert np.array_equal(dataset_store.fetch(ref, "")["x"], arrays(2)["x"])
    fsspec.filesystem("memory").rm(ref.uri.removeprefix("memory://"))
    assert np.array_equal(dataset_store.fetch(ref, "")["x"], arrays(2)["x"])  # from the cache


def test_a_damaged_cached_copy_is_downloaded_again(tmp_path: Path):
    source = tmp_path / "src.npz"
    np.savez(source, **arrays(3))
    from fmnist.stages.digest import sha256_file

    ref = DatasetRef("anywhere", sha256_file(source))
    downloads = []

    def download(dest: Path) -> None:
        downloads.append(dest)
        shutil.copyfile(source, dest)

    cached_dataset(ref, tmp_path / "c", download)
    (tmp_path / "c" / cached_name(ref.sha256)).write_bytes(b"damaged")
    assert np.array_equal(cached_dataset(ref, tmp_path / "c", download)["x"], arrays(3)["x"])
    assert len(downloads) == 2
    with pytest.raises(CorruptEntry, match="as downloaded"):  # a bad download is not kept
        cached_dataset(DatasetRef("anywhere", "0" * 64), tmp_path / "c", download)
    assert not (tmp_path / "c" / cached_name("0" * 64)).exists()
