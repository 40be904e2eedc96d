"""Deploying from git (stack/source.py): only a committed tree whose commit the repository
holds; every refusal says why and what to do (push, commit, or --local). Real git, in
temporary repositories."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from fmnist.stack.ports import free_ports
from fmnist.stack.source import (
    REPOSITORY_ENV,
    SETTINGS_ENV,
    SOURCE_ENV,
    SourceError,
    checked_source,
    deployment_source,
)

ID = ["-c", "user.name=t", "-c", "user.email=t@example.invalid"]


def run(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", *ID, *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A clone of a bare repository with one pushed commit."""
    bare = tmp_path / "origin.git"
    run("init", "-q", "--bare", "-b", "main", str(bare), cwd=tmp_path)
    work = tmp_path / "work"
    run("clone", "-q", str(bare), str(work), cwd=tmp_path)
    (work / "a.txt").write_text("a\n")
    run("add", "a.txt", cwd=work)
    run("commit", "-qm", "one", cwd=work)
    run("push", "-q", "origin", "HEAD:main", cwd=work)
    return work


def test_a_pushed_clean_commit_is_deployed_from_the_remote(clone: Path):
    source = checked_source(clone)
    assert source.repository == str(clone.parent / "origin.git")
    assert source.commit == run("rev-parse", "HEAD", cwd=clone)


def test_an_ancestor_of_a_pushed_branch_is_on_the_remote(clone: Path):
    first = run("rev-parse", "HEAD", cwd=clone)
    (clone / "b.txt").write_text("b\n")
    run("add", "b.txt", cwd=clone)
    run("commit", "-qm", "two", cwd=clone)
    run("push", "-q", "origin", "HEAD:main", cwd=clone)
    run("checkout", "-q", first, cwd=clone)
    assert checked_source(clone).commit == first


@pytest.mark.parametrize("change", ["modified", "untracked"])
def test_uncommitted_changes_are_refused(clone: Path, change: str):
    (clone / ("a.txt" if change == "modified" else "new.py")).write_text("changed\n")
    with pytest.raises(SourceError, match="uncommitted changes") as err:
        checked_source(clone)
    assert "--local" in str(err.value) and ("a.txt" in str(err.value) or "new.py" in str(err.value))


def test_a_commit_the_remote_lacks_is_refused(clone: Path):
    (clone / "a.txt").write_text("local only\n")
    run("commit", "-qam", "not pushed", cwd=clone)
    with pytest.raises(SourceError, match=r"is not on .*origin\.git.*Push it first"):
        checked_source(clone)


def test_no_remote_is_refused_with_what_to_do(tmp_path: Path):
    run("init", "-q", str(tmp_path / "alone"), cwd=tmp_path)
    (tmp_path / "alone" / "f").write_text("x")
    run("add", "f", cwd=tmp_path / "alone")
    run("commit", "-qm", "x", cwd=tmp_path / "alone")
    with pytest.raises(SourceError, match=f"no git remote.*{REPOSITORY_ENV}.*--local"):
        checked_source(tmp_path / "alone")


def test_a_repository_that_is_away_is_a_clear_failure_within_a_bound(clone: Path):
    (port,) = free_ports(1)  # nothing listens there
    started = time.monotonic()
    with pytest.raises(SourceError, match="cannot reach the repository"):
        checked_source(clone, f"git://127.0.0.1:{port}/origin.git")
    assert time.monotonic() - started < 30


def test_a_url_with_a_password_is_refused(clone: Path):
    with pytest.raises(SourceError, match="password or token"):
        checked_source(clone, "https://user:secret@git.example.invalid/repo.git")


def test_the_build_step_checks_the_current_directory(clone: Path, monkeypatch):
    """What a bare `prefect deploy --all` runs: the same checks, the default profile's
    schedule (nightly, the quick profile)."""
    monkeypatch.chdir(clone)
    monkeypatch.delenv(SETTINGS_ENV, raising=False)
    monkeypatch.delenv(SOURCE_ENV, raising=False)
    values = deployment_source()
    assert values["commit_sha"] == run("rev-parse", "HEAD", cwd=clone)
    assert values["repository"].endswith("origin.git")
    assert (values["cron"], values["scheduled_profile"]) == ("0 2 * * *", "quick")
    (clone / "a.txt").write_text("dirty\n")
    with pytest.raises(SourceError, match="uncommitted"):
        deployment_source()
    monkeypatch.setenv(SOURCE_ENV, "local")  # what `deployments apply --local` sets
    assert deployment_source()["commit_sha"] == ""
