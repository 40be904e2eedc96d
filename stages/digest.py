"""SHA-256 of files and streams: how every digest of stored content is computed."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO

CHUNK = 1 << 20


def sha256_stream(fh: BinaryIO, chunk: int = CHUNK) -> str:
    """SHA-256 of what a binary stream yields from where it stands to its end."""
    h = hashlib.sha256()
    while block := fh.read(chunk):
        h.update(block)
    return h.hexdigest()


def sha256_file(path: Path, chunk: int = CHUNK) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    with open(path, "rb") as fh:
        return sha256_stream(fh, chunk)
