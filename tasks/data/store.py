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

from tasks.data.download import sha256_file


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
