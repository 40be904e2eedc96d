"""`make test` runs the suite in two pytest-xdist workers (`-n 2 --dist loadgroup`): most of
a slow family's time is waiting (servers starting, flow runs queued, subprocesses importing
TensorFlow), so a second worker fills it.

Each test joins a group that one worker runs whole, so that the costly fixtures a group
shares are started once: every test that uses the service stack (`service`: tests/service
and the dashboard's browser tests) is one group, the `serving` and `remote` families one
each, every other test file a group of its own (module-scoped fixtures: Prefect's test
harness, a store the smoke pipeline filled).
"""

from __future__ import annotations

import pytest

SHARED = ("service", "serving", "remote")  # families whose tests share a session fixture


def group_of(markers: set[str], path: str) -> str:
    """The xdist group of a test: its shared family's name, else its file."""
    for family in SHARED:
        if family in markers:
            return family
    return path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give each test its group (ignored unless xdist runs with --dist loadgroup)."""
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            markers = {m.name for m in item.iter_markers()}
            item.add_marker(pytest.mark.xdist_group(group_of(markers, item.nodeid.split("::")[0])))
