"""Content-addressed storage of derived arrays (e.g. the augmented images).

A file is written under a temporary name and renamed into place, so a crash never leaves a
partial file under the final name; readers verify the SHA-256 they were handed.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmnist.stages.augment import Augmented
from fmnist.stages.digest import sha256_file, sha256_stream
from fmnist.stages.load import Dataset

log = logging.getLogger(__name__)


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


class CorruptEntry(ValueError):
    """A stored file whose content is not the digest it was stored with: never use it."""


def problem(ref: StoredArrays) -> str | None:
    """What is wrong with a stored entry (missing, wrong digest), or None if it is sound."""
    path = Path(ref.path)
    if not path.is_file():
        return f"{ref.path}: missing"
    actual = sha256_file(path)
    if actual != ref.sha256:
        return f"{ref.path}: sha256 {actual}, expected {ref.sha256}"
    return None


def verify_stored(ref: StoredArrays) -> bool:
    """True if the entry is there with its digest; else warns, so the caller rebuilds it.

    For the augment step's cache validation (a cached StoredArrays may point at a deleted or
    damaged file). Costs one SHA-256 pass over the file: about 0.1 s per 100 MB here.
    """
    trouble = problem(ref)
    if trouble:
        log.warning("stored arrays not valid (%s); rebuilding them", trouble)
    return trouble is None


def load_arrays(ref: StoredArrays) -> dict[str, np.ndarray]:
    """Read arrays back after checking the file's digest (CorruptEntry if it does not match)."""
    actual = sha256_file(Path(ref.path))
    if actual != ref.sha256:
        raise CorruptEntry(f"{ref.path}: sha256 {actual}, expected {ref.sha256}")
    with np.load(ref.path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


@dataclass(frozen=True)
class DatasetRef:
    """A prepared dataset in the dataset store: where it is and the SHA-256 of the file."""

    uri: str
    sha256: str


AUTO = "auto"  # data.store_uri's default
TRACKING_STORE = "mlflow"  # the pipeline run's artifacts, through the tracking server
LOCAL_STORE = "data/store"
_TRACKING_SCHEMES = ("runs:/", "mlflow-artifacts:")


def resolve_store(store_uri: str, tracking_uri: str) -> str:
    """Where the prepared dataset goes: `auto` is the tracking server's artifact store when
    runs are tracked on a server (every worker reaches it with the credential it holds
    already), else the local folder data/store; anything else is taken as it is."""
    if store_uri != AUTO:
        return store_uri
    return TRACKING_STORE if tracking_uri.startswith(("http://", "https://")) else LOCAL_STORE


def in_tracking_store(uri: str) -> bool:
    """Whether a dataset URI names a tracking server artifact (runs:/, mlflow-artifacts:)."""
    return uri.startswith(_TRACKING_SCHEMES)


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
        uri = _join(store_uri, cached_name(local.sha256))
        fs, path = fsspec.core.url_to_fs(uri)
        if not fs.exists(path):
            fs.makedirs(fs._parent(path), exist_ok=True)
            partial = f"{path}.partial-{os.getpid()}"
            fs.put_file(local.path, partial)
            fs.mv(partial, path)  # a rename: readers never see a half-written file
    return DatasetRef(uri, local.sha256)


def verify_dataset(ref: DatasetRef) -> bool:
    """True if the published dataset is in the store with its digest (hashes it once).

    fetch_dataset checks the digest on every read anyway; this is for a cache validation
    that wants to know before handing the reference on.
    """
    import fsspec

    fs, path = fsspec.core.url_to_fs(ref.uri)
    if not fs.exists(path):
        log.warning("dataset %s is not in the store", ref.uri)
        return False
    with fs.open(path, "rb") as fh:
        actual = sha256_stream(fh)
    if actual != ref.sha256:
        log.warning("dataset %s: sha256 %s, expected %s", ref.uri, actual, ref.sha256)
        return False
    return True


def fetch_dataset(ref: DatasetRef, cache_dir: Path | None = None) -> dict[str, np.ndarray]:
    """Read a published dataset, checking its SHA-256 against the one it was published with.

    A local folder is read in place; from any other store the file is copied into cache_dir
    (by digest: one download per machine, see `cached_dataset`), or a temporary folder.
    """
    import fsspec

    fs, path = fsspec.core.url_to_fs(ref.uri)
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol

    def download(dest: Path) -> None:
        if not fs.exists(path):
            raise FileNotFoundError(f"dataset {ref.uri} is not in the store")
        fs.get_file(path, str(dest))

    if "file" in protocols:  # a local folder: read in place
        if not fs.exists(path):
            raise FileNotFoundError(f"dataset {ref.uri} is not in the store")
        return load_arrays(StoredArrays(path, ref.sha256))
    if cache_dir is not None:
        return cached_dataset(ref, cache_dir, download)
    with tempfile.TemporaryDirectory(prefix="fmnist-fetch-") as tmp:
        local = Path(tmp) / "dataset.npz"
        download(local)
        return load_arrays(StoredArrays(str(local), ref.sha256))


def cached_name(sha256: str) -> str:
    """The file name of a dataset in a cache or store: its content digest."""
    return f"dataset-{sha256}.npz"


def cached_dataset(
    ref: DatasetRef, cache_dir: Path, download: Callable[[Path], None], timeout: float = 1800
) -> dict[str, np.ndarray]:
    """The dataset from cache_dir/dataset-<sha256>.npz, downloaded there first if missing.

    The models of a run share one download per machine: a file lock makes the others wait
    for the first (timeout: how long), and the file is only renamed into place once its
    digest is verified. A cached file that no longer matches its digest is downloaded again.
    """
    from filelock import FileLock

    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / cached_name(ref.sha256)
    with FileLock(f"{path}.lock", timeout=timeout):
        if path.is_file():
            try:
                return load_arrays(StoredArrays(str(path), ref.sha256))
            except CorruptEntry as exc:
                log.warning("cached dataset damaged (%s); downloading it again", exc)
                path.unlink()
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=cache_dir) as tmp:
            local = Path(tmp) / path.name
            download(local)
            if (trouble := problem(StoredArrays(str(local), ref.sha256))) is not None:
                raise CorruptEntry(f"dataset {ref.uri} as downloaded: {trouble}")
            os.replace(local, path)
    return load_arrays(StoredArrays(str(path), ref.sha256))


# -- the prepared dataset's payload: what the pipeline publishes and a training run reads ---

_DATASET_KEYS = ("x_train", "y_train", "x_test", "y_test")


def pack_dataset(ds: Dataset, augmented: Augmented | None = None) -> dict[str, np.ndarray]:
    """The arrays to publish for training runs: the dataset, and augmented images if any."""
    arrays = {k: getattr(ds, k) for k in _DATASET_KEYS} | {"digest": np.array(ds.digest)}
    if augmented is not None:
        arrays |= {
            "x_aug": augmented.x,
            "y_aug": augmented.y,
            "augmented_sha256": np.array(augmented.sha256),
        }
    return arrays


def unpack_dataset(arrays: dict[str, np.ndarray]) -> tuple[Dataset, Augmented | None]:
    """The dataset (and augmented images, if published) back from `pack_dataset`'s arrays."""
    ds = Dataset(**{k: arrays[k] for k in _DATASET_KEYS}, digest=str(arrays["digest"]))
    if "x_aug" not in arrays:
        return ds, None
    return ds, Augmented(arrays["x_aug"], arrays["y_aug"], str(arrays["augmented_sha256"]))
