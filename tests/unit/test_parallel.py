"""Which tests one xdist worker runs together (tests/parallel.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.parallel import group_of

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("nodeid", "group"),
    [
        ("tests/service/test_stack.py::test_up", "service"),
        ("tests/browser/test_prefect_ui.py::test_quick_run[x]", "service"),
        ("tests/browser/test_mlflow_ui.py::test_compare", "tests/browser/test_mlflow_ui.py"),
        ("tests/serving/test_http.py::test_png", "serving"),
        ("tests/remote/test_remote_worker.py::test_four_models", "remote"),
        ("tests/flows/test_pipeline.py::test_flow[a::b]", "tests/flows/test_pipeline.py"),
    ],
)
def test_a_shared_family_is_one_group_and_every_other_file_its_own(nodeid, group):
    assert group_of(nodeid) == group


def test_the_suite_runs_each_group_on_one_worker(pytester, monkeypatch):
    """Two files of one family and two files of their own, in two workers: the family's
    tests all on one worker, each other file's on one."""
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the workers import tests.parallel from here
    body = "".join(f"def test_{i}():\n    pass\n" for i in range(4))
    for path in ("tests/serving/test_a.py", "tests/serving/test_b.py", "tests/x/test_c.py"):
        (pytester.path / path).parent.mkdir(parents=True, exist_ok=True)
        (pytester.path / path).write_text(body)
    (pytester.path / "tests/x/test_d.py").write_text(body)
    args = (
        "-p",
        "tests.parallel",
        "-n",
        "2",
        "--dist",
        "loadgroup",
        "-v",
        "-p",
        "no:cacheprovider",
    )
    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(passed=16)
    workers: dict[str, set[str]] = {}
    for line in result.outlines:
        if "PASSED" in line and line.startswith("[gw"):
            path = line.split()[-1].split("::")[0]
            workers.setdefault(group_of(path), set()).add(line.split()[0])
    assert set(workers) == {"serving", "tests/x/test_c.py", "tests/x/test_d.py"}, workers
    assert all(len(w) == 1 for w in workers.values()), workers
