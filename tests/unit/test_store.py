"""The dataset store: content-addressed, atomic, verified on the way back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fmnist.stages.store import DatasetRef, fetch_dataset, publish_dataset


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


def test_a_damaged_stored_entry_is_reported_and_never_loaded(tmp_path, caplog):
    from fmnist.stages.store import CorruptEntry, load_arrays, save_arrays, verify_stored

    ref = save_arrays(tmp_path / "aug.npz", **arrays(4))
    assert verify_stored(ref)
    data = bytearray(Path(ref.path).read_bytes())
    data[-10] ^= 0xFF  # one flipped byte inside the array payload
    Path(ref.path).write_bytes(bytes(data))
    assert not verify_stored(ref)
    assert "sha256" in caplog.text and "rebuilding" in caplog.text
    with pytest.raises(CorruptEntry, match="expected"):
        load_arrays(ref)
    Path(ref.path).unlink()
    assert not verify_stored(ref)
    assert "missing" in caplog.text


def test_verify_dataset(tmp_path):
    from fmnist.stages.store import verify_dataset

    ref = publish_dataset(str(tmp_path), **arrays(5))
    assert verify_dataset(ref)
    assert not verify_dataset(DatasetRef(ref.uri, "0" * 64))
    assert not verify_dataset(DatasetRef(str(tmp_path / "nope.npz"), ref.sha256))
    mem = publish_dataset("memory://fmnist-verify", **arrays(6))
    assert verify_dataset(mem) and not verify_dataset(DatasetRef(mem.uri, "0" * 64))
