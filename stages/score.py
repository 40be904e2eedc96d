"""Batch scoring as plain code: the images of a folder or fsspec URL, read in batches, and the
predictions as rows of a table (CSV for MLflow, a table for Prefect)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from fmnist.stages.load import CLASS_NAMES

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class Scored:
    """One file's prediction, or why it has none."""

    path: str
    class_index: int | None = None
    class_name: str | None = None
    probabilities: Sequence[float] | None = None
    warning: str | None = None
    error: str | None = None

    def row(self) -> dict[str, Any]:
        """A flat row: path, class, its probability, warning, error, the ten probabilities."""
        probs = list(self.probabilities) if self.probabilities is not None else [None] * 10
        top = probs[self.class_index] if self.class_index is not None else None
        out: dict[str, Any] = {
            "path": self.path,
            "class_index": self.class_index,
            "class_name": self.class_name,
            "probability": top,
            "warning": self.warning or "",
            "error": self.error or "",
        }
        return out | {f"p_{name}": p for name, p in zip(CLASS_NAMES, probs, strict=True)}


def list_images(source: str) -> list[str]:
    """The image files under a folder or fsspec URL (recursively), as URLs, sorted; a URL of
    one file is that file. ValueError if there are none."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(source)
    if fs.isfile(path):
        found = [path]
    else:
        found = [p for p in fs.find(path) if p.lower().endswith(EXTENSIONS)]
    if not found:
        raise ValueError(f"no images ({', '.join(EXTENSIONS)}) under {source}")
    return sorted(fs.unstrip_protocol(p) if "://" in source else p for p in found)


def read_batches(urls: Sequence[str], size: int) -> Iterator[list[tuple[str, bytes | str]]]:
    """(url, bytes) per file, size at a time; a file that cannot be read gives (url, the
    error's text) instead, so one bad file does not stop the rest."""
    import fsspec

    for start in range(0, len(urls), size):
        batch: list[tuple[str, bytes | str]] = []
        for url in urls[start : start + size]:
            try:
                with fsspec.open(url, "rb") as file:
                    batch.append((url, file.read()))
            except OSError as exc:
                batch.append((url, f"cannot read: {exc}"))
        yield batch


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    """Rows as CSV text, with a header."""
    if not rows:
        return ""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
