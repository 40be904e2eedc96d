"""Data stage: download + verify the IDX files, parse, reshape and normalise them."""

from tasks.data.download import FILES, DigestMismatch, DownloadError, fetch_all, fetch_file
from tasks.data.loading import CLASS_NAMES, Dataset, IdxFormatError, load_dataset

__all__ = [
    "CLASS_NAMES",
    "FILES",
    "Dataset",
    "DigestMismatch",
    "DownloadError",
    "IdxFormatError",
    "fetch_all",
    "fetch_file",
    "load_dataset",
]
