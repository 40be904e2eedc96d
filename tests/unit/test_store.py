"""The dataset store: content-addressed, atomic, verified on the way back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stages.store import DatasetRef, fetch_dataset, publish_dataset


def arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.random((4, 28, 28, 1), dtype=np.float32), "digest": np.array("abc")}


def test_publish_is_content_addressed_and_idempotent(tmp_path):
    a = publish_dataset(str(tmp_path / "store"), **arrays(0))
    again = publish_dataset(str(tmp_path / "store"), **arrays(0))
    other = publish_dataset(str(tmp_path / "store"), **arrays(1))
    assert a == again
    assert a.sha256 != other.sha256
    assert Path(a.uri).name == f"dataset-{a.sha256}.npz"
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == sorted(
        [Path(a.uri).name, Path(other.uri).name]
    )  # no partial files left behind


def test_relative_store_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ref = publish_dataset("store", **arrays())
    assert Path(ref.uri).is_absolute()


def test_fetch_round_trip_and_verification(tmp_path):
    ref = publish_dataset(str(tmp_path), **arrays(2))
    back = fetch_dataset(ref)
    assert np.array_equal(back["x"], arrays(2)["x"]) and str(back["digest"]) == "abc"
    with pytest.raises(ValueError, match="expected 0000"):
        fetch_dataset(DatasetRef(ref.uri, "0000"))
    with pytest.raises(FileNotFoundError, match="not in the store"):
        fetch_dataset(DatasetRef(str(tmp_path / "nope.npz"), ref.sha256))


def test_any_fsspec_url_works():
    ref = publish_dataset("memory://fmnist-store", **arrays(3))
    assert ref.uri.startswith("memory://")
    assert np.array_equal(fetch_dataset(ref)["x"], arrays(3)["x"])
