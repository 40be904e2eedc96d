"""`make test` runs the suite in two pytest-xdist workers (`-n 2 --dist loadgroup`): most of
a slow family's time is waiting (servers starting, flow runs queued, subprocesses importing
TensorFlow), so a second worker fills it.

Each test belongs to a group that one worker runs whole, so that the costly fixtures a group
shares start once: the tests that use the service stack (tests/service and the dashboard's
browser tests) one group, the `serving` and `remote` families one each, every other test
file a group of its own (module-scoped fixtures: Prefect's test harness, a store the smoke
pipeline filled).

xdist's own loadgroup reads `xdist_group` marks into node ids, which has no effect with
pytest 9 here (the tests of one marked file still went to both workers), so the scheduler
is ours: xdist's scope scheduling with our groups, from the node id (the controller has no
items, only ids). The markers stay the truth: collection refuses a family's test that lies
outside the family's paths.
"""

from __future__ import annotations

from typing import Any

import pytest

# Families whose tests share a session fixture, and where their tests live.
FAMILY_PATHS = {
    "service": ("tests/service/", "tests/browser/test_prefect_ui.py"),
    "serving": ("tests/serving/",),
    "remote": ("tests/remote/",),
}


def group_of(nodeid: str) -> str:
    """The group of a test: its shared family's name, else its file."""
    path = nodeid.split("::")[0]
    for family, prefixes in FAMILY_PATHS.items():
        if path.startswith(prefixes):
            return family
    return path


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """With --dist loadgroup: whole groups to one worker each (see the module docstring)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FamilyScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

    return FamilyScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse a test of a shared family that lies outside that family's group."""
    for item in items:
        families = [f for f in FAMILY_PATHS if item.get_closest_marker(f) is not None]
        if families and group_of(item.nodeid) not in families:
            raise pytest.UsageError(
                f"{item.nodeid} is a {families[0]} test outside "
                f"{FAMILY_PATHS[families[0]]}: add its path to tests/parallel.py's FAMILY_PATHS"
            )
