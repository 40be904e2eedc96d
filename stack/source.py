"""Where deployed flows get their code: a git repository at the exact commit deployed.

prefect.yaml's build step `fmnist.stack.source.deployment_source` runs on every deploy, by
`python -m fmnist.stack.deployments apply` or by a bare `prefect deploy --all`: it refuses a
tree with uncommitted changes or a commit the repository lacks (a worker could not clone it,
or would run other code than what was tested here), and hands the pull step the repository
and commit. The repository is FMNIST_GIT_REPOSITORY, else the URL of the current branch's
remote (else `origin`). FMNIST_DEPLOY_SOURCE=local skips all of this: flow runs then use this
checkout as it is on disk, which only workers on this machine can reach.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPOSITORY_ENV = "FMNIST_GIT_REPOSITORY"
SOURCE_ENV = "FMNIST_DEPLOY_SOURCE"  # git (default) or local
SETTINGS_ENV = "FMNIST_DEPLOY_SETTINGS"  # JSON from `deployments apply`: the profile's values
GIT_TIMEOUT_S = 60.0  # every git call, ls-remote of an unreachable server included
LOCAL_HINT = (
    "or, for workers on this machine only, deploy this checkout as it is on disk: "
    "python -m fmnist.stack.deployments apply --local (FMNIST_DEPLOY_SOURCE=local)"
)


class SourceError(RuntimeError):
    """The code cannot be deployed from git; the message says why and what to do."""


@dataclass(frozen=True)
class Source:
    """A repository URL and the commit flow runs check out of it."""

    repository: str
    commit: str


def git(*args: str, cwd: Path, timeout: float = GIT_TIMEOUT_S) -> str:
    """Run git in cwd; its stdout, or SourceError with its stderr (never a prompt, bounded)."""
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="/bin/true", LC_ALL="C")
    try:
        result = subprocess.run(
            ["git", *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise SourceError(f"`git {' '.join(args)}` gave no answer in {timeout:.0f} s") from None
    except OSError as exc:
        raise SourceError(f"cannot run git: {exc}") from None
    if result.returncode != 0:
        raise SourceError(f"`git {' '.join(args)}` failed: {result.stderr.strip()}")
    return result.stdout.rstrip()


def default_repository(checkout: Path) -> str:
    """FMNIST_GIT_REPOSITORY, else the fetch URL of the branch's remote, else origin's."""
    if url := os.environ.get(REPOSITORY_ENV):
        return url
    remotes = git("remote", cwd=checkout).split()
    try:
        remote = git("rev-parse", "--abbrev-ref", "--symbolic-full-name", "@{u}", cwd=checkout)
        remote = remote.split("/", 1)[0]
    except SourceError:  # no upstream branch
        remote = "origin" if "origin" in remotes else (remotes[0] if len(remotes) == 1 else "")
    if remote not in remotes:
        raise SourceError(
            f"{checkout} has no git remote to deploy from: workers clone the code from one. "
            f"Push it to a repository they reach and set {REPOSITORY_ENV}=<url> (or "
            f"`git remote add origin <url>`); {LOCAL_HINT}"
        )
    return git("remote", "get-url", remote, cwd=checkout)


def _check_url(url: str) -> None:
    if urlsplit(url).password:
        raise SourceError(
            f"{REPOSITORY_ENV} / the remote's URL holds a password or token: it would be "
            "stored in the deployment for anyone with Prefect access to read. Use a URL "
            "without it and give workers their own git credentials (an SSH key, a "
            "credential helper, or git_clone's access_token from a Prefect Secret block)"
        )


def _on_remote(checkout: Path, url: str, commit: str) -> bool:
    """Whether a branch or tag of url holds commit (at its tip, or as an ancestor we know)."""
    refs = git("ls-remote", "--heads", "--tags", url, cwd=checkout)
    tips = {line.split()[0] for line in refs.splitlines() if line.strip()}
    if commit in tips:
        return True
    for tip in tips:
        try:
            git("merge-base", "--is-ancestor", commit, tip, cwd=checkout)
        except SourceError:  # not an ancestor, or a tip this clone has not fetched
            continue
        return True
    return False


def checked_source(checkout: Path, repository: str | None = None) -> Source:
    """The repository and commit to deploy from checkout, or SourceError saying why not."""
    try:
        commit = git("rev-parse", "HEAD", cwd=checkout)
    except SourceError as exc:
        raise SourceError(f"{checkout} is not a git checkout with a commit ({exc}); "
                          f"{LOCAL_HINT}") from None  # fmt: skip
    changes = git("status", "--porcelain", cwd=checkout).splitlines()
    if changes:
        listed = ", ".join(line[3:] for line in changes[:5]) + (", ..." if len(changes) > 5 else "")
        raise SourceError(
            f"{checkout} has uncommitted changes ({listed}): workers would run commit "
            f"{commit[:12]} without them. Commit (or stash) them and push, then deploy; "
            f"{LOCAL_HINT}"
        )
    url = repository or default_repository(checkout)
    _check_url(url)
    try:
        present = _on_remote(checkout, url, commit)
    except SourceError as exc:
        raise SourceError(
            f"cannot reach the repository workers clone from, {url}: {exc}. Start it or "
            f"set {REPOSITORY_ENV}; {LOCAL_HINT}"
        ) from None
    if not present:
        raise SourceError(
            f"commit {commit[:12]} is not on {url} (no branch or tag there holds it): "
            "workers could not check it out. Push it first (git push), or `git fetch` if it "
            f"is there under a branch this clone has not seen; {LOCAL_HINT}"
        )
    return Source(url, commit)


def deploy_settings() -> dict[str, Any]:
    """The schedule and scheduled profile: `deployments apply` passes its profile's in
    FMNIST_DEPLOY_SETTINGS; a bare `prefect deploy` gets the default profile's."""
    if raw := os.environ.get(SETTINGS_ENV):
        return json.loads(raw)
    from fmnist.conf import DEFAULT_PROFILE, load_config

    return settings_of(load_config(DEFAULT_PROFILE))


def settings_of(cfg: Any) -> dict[str, Any]:
    """What prefect.yaml templates from a profile's deploy: section."""
    sched = cfg.deploy.schedule
    return {
        "scheduled_profile": cfg.deploy.scheduled_profile,
        "cron": sched.cron,
        "timezone": sched.timezone,
        "active": sched.active,
    }


def deployment_source() -> dict[str, Any]:
    """prefect.yaml's build step: the checked repository and commit of the current directory,
    and the profile's schedule values, as `{{ source.* }}` for the pull step and deployments."""
    values = deploy_settings()
    if os.environ.get(SOURCE_ENV, "git") == "local":
        return values | {"repository": "", "commit_sha": ""}
    source = checked_source(Path.cwd())
    print(f"flow runs will clone {source.repository} at commit {source.commit}")
    return values | {"repository": source.repository, "commit_sha": source.commit}
