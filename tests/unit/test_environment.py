"""The packages check (stages/environment.py): what differs from the lock is named with both
versions; what the lock does not pin, or pins but nobody needs, is no skew."""

from __future__ import annotations

from pathlib import Path

import pytest

from fmnist.stages.environment import (
    ROOT,
    PackageSkew,
    check_packages,
    installed_packages,
    packages_digest,
    read_lock,
    required_packages,
    version_skew,
)

LOCK = """\
#    pip-compile ... pyproject.toml
keras==3.15.1
    # via fashion-mnist-pipeline (pyproject.toml)
Numpy==2.4.6 ; python_version >= "3.8"
ruamel.yaml==0.19.1
pywin32==311 ; sys_platform == "win32"
pytest==9.0.0
"""


def test_the_lock_is_read_with_normalised_names_and_markers_applied():
    assert read_lock(LOCK) == {
        "keras": "3.15.1",
        "numpy": "2.4.6",
        "ruamel-yaml": "0.19.1",
        "pytest": "9.0.0",
    }


def test_skew_names_each_package_with_both_versions():
    installed = {"keras": "3.0.0", "numpy": "2.4.6", "ruamel-yaml": "0.18.0", "cuda-x": "12"}
    skew = version_skew(read_lock(LOCK), installed, required={"keras", "numpy"})
    assert [str(s) for s in skew] == [
        "keras 3.15.1 locked, 3.0.0 installed",
        "ruamel-yaml 0.19.1 locked, 0.18.0 installed",
    ]


def test_a_missing_package_is_skew_only_when_the_project_requires_it():
    lock = read_lock(LOCK)
    installed = {"keras": "3.15.1", "ruamel-yaml": "0.19.1"}
    assert [s.name for s in version_skew(lock, installed, {"keras"})] == []  # no pytest: fine
    [skew] = version_skew(lock, installed, {"keras", "numpy"})
    assert str(skew) == "numpy 2.4.6 locked, not installed"


def test_required_packages_are_pyprojects_dependencies():
    names = required_packages((ROOT / "pyproject.toml").read_text())
    assert {"keras", "tensorflow", "numpy", "prefect", "mlflow"} <= names
    assert "pytest" not in names  # an extra, not a dependency


def test_this_checkout_matches_its_own_lock():
    """`make` installs from the lock, so the suite's own environment passes the check."""
    assert check_packages() == str(ROOT / "requirements.lock")


def test_a_lock_that_pins_another_version_is_refused_naming_it(tmp_path: Path):
    have = installed_packages()
    (tmp_path / "pyproject.toml").write_text('[project]\ndependencies = ["numpy>=1"]\n')
    (tmp_path / "requirements.lock").write_text(
        f"numpy==0.0.1\nkeras=={have['keras']}\nnot-installed-anywhere==1.0\n"
    )
    with pytest.raises(PackageSkew) as err:
        check_packages(tmp_path)
    assert f"numpy 0.0.1 locked, {have['numpy']} installed" in str(err.value)
    assert "keras" not in str(err.value)


def test_no_lock_no_check(tmp_path: Path):
    assert check_packages(tmp_path) is None


def test_the_digest_follows_the_versions():
    assert packages_digest({"a": "1"}) == packages_digest({"a": "1"})
    assert packages_digest({"a": "1"}) != packages_digest({"a": "2"})
