"""Faults injected into real runs: the `fmnist` CLI in subprocesses, servers on 127.0.0.1.

Each run is the smoke profile shrunk further (256 training images, 200 test images, one
small model), with its own PREFECT_HOME (Prefect's ephemeral API), SQLite tracking store
and data folders under the test's temporary directory.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import Workspace


@pytest.fixture
def workspace(tmp_path: Path, debian_dir: Path) -> Workspace:
    """A fresh workspace reading the IDX files from Debian's folder."""
    return Workspace(tmp_path, str(debian_dir))
