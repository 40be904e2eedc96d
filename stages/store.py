"""Content-addressed storage of derived arrays (e.g. the augmented images).

A file is written under a temporary name and renamed into place, so a crash never leaves a
partial file under the final name; readers verify the SHA-256 they were handed.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.download import sha256_file


@dataclass(frozen=True)
class StoredArrays:
    """Where a set of arrays was stored and the digest of the file."""

    path: str
    sha256: str

    def exists(self) -> bool:
        """True if the file is still there (a cache may outlive the files it points to)."""
        return Path(self.path).is_file()


def save_arrays(path: Path, **arrays: np.ndarray) -> StoredArrays:
    """Write arrays to an uncompressed .npz atomically; return its path and digest."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return StoredArrays(str(path), sha256_file(path))


def load_arrays(ref: StoredArrays) -> dict[str, np.ndarray]:
    """Read arrays back after checking the file's digest."""
    actual = sha256_file(Path(ref.path))
    if actual != ref.sha256:
        raise ValueError(f"{ref.path}: sha256 {actual}, expected {ref.sha256}")
    with np.load(ref.path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


@dataclass(frozen=True)
class DatasetRef:
    """A prepared dataset in the dataset store: where it is and the SHA-256 of the file."""

    uri: str
    sha256: str


def _join(store_uri: str, name: str) -> str:
    return f"{store_uri.rstrip('/')}/{name}"


def publish_dataset(store_uri: str, **arrays: np.ndarray) -> DatasetRef:
    """Write arrays to the store (a folder or any fsspec URL) under their content digest.

    The file is named after its SHA-256, so publishing the same content twice is a no-op and
    two different datasets can never overwrite each other. Workers on other machines get the
    URI and the digest, and verify it before they train.
    """
    import fsspec

    if "://" not in store_uri:
        # A plain folder: make it absolute, since workers resolve it in their own cwd.
        store_uri = str(Path(store_uri).expanduser().resolve())
    with tempfile.TemporaryDirectory(prefix="fmnist-publish-") as tmp:
        local = save_arrays(Path(tmp) / "dataset.npz", **arrays)
        uri = _join(store_uri, f"dataset-{local.sha256}.npz")
        fs, path = fsspec.core.url_to_fs(uri)
        if not fs.exists(path):
            fs.makedirs(fs._parent(path), exist_ok=True)
            partial = f"{path}.partial-{os.getpid()}"
            fs.put_file(local.path, partial)
            fs.mv(partial, path)  # a rename: readers never see a half-written file
    return DatasetRef(uri, local.sha256)


def fetch_dataset(ref: DatasetRef, cache_dir: Path | None = None) -> dict[str, np.ndarray]:
    """Read a published dataset, checking its SHA-256 against the one it was published with."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(ref.uri)
    if not fs.exists(path):
        raise FileNotFoundError(f"dataset {ref.uri} is not in the store")
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol
    if "file" in protocols:  # a local folder: read in place
        return load_arrays(StoredArrays(path, ref.sha256))
    with tempfile.TemporaryDirectory(prefix="fmnist-fetch-", dir=cache_dir) as tmp:
        local = Path(tmp) / "dataset.npz"
        fs.get_file(path, str(local))
        return load_arrays(StoredArrays(str(local), ref.sha256))
