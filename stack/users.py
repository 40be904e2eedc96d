"""The stack's OS users and what each one owns.

Started as root, the stack runs its programs under three users that cannot read each other's
files (only supervisord stays root):

- the server user (FMNIST_SERVER_USER, default `fmnist-server`): the Prefect and MLflow
  servers; owns their state (MLflow's auth database and artifact store included) and the
  files that hand them their secrets, all mode 0600/0700;
- the proxy user (FMNIST_PROXY_USER, default `fmnist-proxy`), only with a public address:
  nginx, the TLS front (stack/proxy.py); owns the server certificate's key;
- the worker user (FMNIST_WORKER_USER, default `fmnist-worker`): the Prefect workers and the
  flow runs they start; owns only its home, its own credentials file and the data folders
  flow runs write;
- `postgres`: PostgreSQL (stack/postgres.py).

Both are system users without a login shell, created when missing. Stacks on one host share
them unless these variables say otherwise. Without root everything runs as the caller.
"""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
from dataclasses import dataclass
from pathlib import Path

from fmnist.stack import StackError

SERVER_USER_ENV, SERVER_USER_DEFAULT = "FMNIST_SERVER_USER", "fmnist-server"
WORKER_USER_ENV, WORKER_USER_DEFAULT = "FMNIST_WORKER_USER", "fmnist-worker"
PROXY_USER_ENV, PROXY_USER_DEFAULT = "FMNIST_PROXY_USER", "fmnist-proxy"


@dataclass(frozen=True)
class ServiceUser:
    """An OS user some of the stack's programs run as (only when started as root)."""

    name: str
    uid: int
    gid: int


def _user(env: str, default: str, create: bool) -> ServiceUser | None:
    """The user named by env (else default), created as a system user when missing; None
    when we are not root (the programs then run as the caller) or when it is missing and
    create is False."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get(env) or default
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        entry = None
    if entry is None:
        if not create:
            return None
        flags = ["--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent"]
        result = subprocess.run(
            ["useradd", *flags, "--shell", "/usr/sbin/nologin", name],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise StackError(f"could not create user {name!r}: {result.stderr.strip()}")
        entry = pwd.getpwnam(name)
    if entry.pw_uid == 0:
        raise StackError(f"{env}={name!r} is root; name an unprivileged user")
    return ServiceUser(entry.pw_name, entry.pw_uid, entry.pw_gid)


def server_user(create: bool = True) -> ServiceUser | None:
    """The user of the Prefect and MLflow servers (FMNIST_SERVER_USER, `fmnist-server`)."""
    return _user(SERVER_USER_ENV, SERVER_USER_DEFAULT, create)


def worker_user(create: bool = True) -> ServiceUser | None:
    """The user of the workers and their flow runs (FMNIST_WORKER_USER, `fmnist-worker`)."""
    return _user(WORKER_USER_ENV, WORKER_USER_DEFAULT, create)


def proxy_user(create: bool = True) -> ServiceUser | None:
    """The user of the TLS front, nginx (FMNIST_PROXY_USER, `fmnist-proxy`): the network-facing
    parser holds the TLS key and none of the servers' or workers' secrets."""
    return _user(PROXY_USER_ENV, PROXY_USER_DEFAULT, create)


def check_separate(server: ServiceUser | None, worker: ServiceUser | None) -> None:
    """Refuse a server and worker user that could read each other's files."""
    if server is None or worker is None:
        return
    if server.uid == worker.uid:
        raise StackError(
            f"the servers and the workers would both run as uid {server.uid}: then any flow "
            f"run reads the servers' secrets; set {SERVER_USER_ENV} and {WORKER_USER_ENV} "
            "to two different users"
        )
    if worker.gid == server.gid or worker.name in grp.getgrgid(server.gid).gr_mem:
        raise StackError(
            f"user {worker.name!r} is in {server.name!r}'s group: give them groups of their own"
        )


def owned_dir(
    path: Path, user: ServiceUser | None, mode: int = 0o700, *, recursive: bool = False
) -> Path:
    """A folder that belongs to user (or to us), mode 0700 by default. recursive: also hand
    over everything below when the folder belonged to someone else (an older stack ran its
    services as another user)."""
    path.mkdir(parents=True, exist_ok=True)
    if user is not None:
        if recursive and path.stat().st_uid != user.uid:
            chown_tree(path, user)
        os.chown(path, user.uid, user.gid)
    os.chmod(path, mode)
    return path


def chown_tree(path: Path, user: ServiceUser) -> None:
    """Hand a folder and everything below it to user (links themselves, not their targets)."""
    for folder, dirs, files in os.walk(path):
        os.chown(folder, user.uid, user.gid)
        for name in dirs + files:
            os.lchown(os.path.join(folder, name), user.uid, user.gid)


def private_file(path: Path, text: str, user: ServiceUser | None) -> Path:
    """Write text to a file only user (and root) may read: mode 0600, created that way, so
    it is never readable by others, not even for a moment."""
    path.unlink(missing_ok=True)  # a file of another owner or mode is not reused
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        if user is not None:
            os.fchown(out.fileno(), user.uid, user.gid)
        out.write(text)
    return path


def check_reachable(users: list[ServiceUser | None], paths: list[Path], venv_bin: Path) -> None:
    """Each service user can enter the paths (repository, venv, state folder) and run the
    venv's Python (StackError naming the folder in the way)."""
    interpreter = (venv_bin / "python").resolve()
    for user in filter(None, users):
        for path in paths:
            if (blocked := unsearchable_ancestor(path, user.uid, user.gid)) is not None:
                raise StackError(
                    f"the services run as {user.name!r}, which cannot enter {blocked}; "
                    "open it (chmod o+x) or put the repository / state folder elsewhere"
                )
        if (blocked := unsearchable_ancestor(interpreter, user.uid, user.gid)) is not None:
            raise StackError(
                f"the services run as {user.name!r}, which cannot enter {blocked} to run "
                f"the venv's Python ({interpreter}); build the venv from a Python it can "
                "reach: rm -rf .venv && make .venv/.installed (make picks one)"
            )


def unsearchable_ancestor(path: Path, uid: int, gid: int) -> Path | None:
    """The first existing folder on the way to path that user uid (group gid) cannot enter."""
    name = pwd.getpwuid(uid).pw_name
    groups = {gid} | {g.gr_gid for g in grp.getgrall() if name in g.gr_mem}
    for folder in [*reversed(path.parents), path]:
        try:
            st = folder.stat()
        except FileNotFoundError:
            return None
        if st.st_uid == uid:
            bit = 0o100
        elif st.st_gid in groups:
            bit = 0o010
        else:
            bit = 0o001
        if not st.st_mode & bit:
            return folder
    return None
