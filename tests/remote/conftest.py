"""The `remote` family's set-up: a second host (tests/remote/host.py), a git server on this
machine's side of the veth pair, a stack whose servers other machines reach through TLS only
(`stack-up` with FMNIST_PUBLIC_ADDRESS: nginx on the veth address), the deployments applied
from a clean clone of HEAD taken from that git server, and a worker on the second host
started as docs/remote.md says: one file from `worker-settings`, one command.

The stack is the family's own (a public address is a `stack-up` setting, and the session's
stack listens on loopback only), without a `gpu` worker of its own: every training run can
only be the remote worker's. Everything stops in `finally` blocks, failures included.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fmnist.stack import REPO_ROOT, StackError
from fmnist.stack.core import Ports, Stack, temp_state_dir
from fmnist.stack.mlflow_server import MLFLOW_ADMIN, mlflow_login
from fmnist.stack.ports import free_ports
from fmnist.stack.postgres import postgres_missing
from fmnist.stack.proxy import Public, nginx_binary
from tests.remote.host import SecondHost, sh, sweep
from tests.skips import missing

EXPERIMENT = "remote-e2e"
WORKER = "box1"


def _needs() -> None:
    if os.geteuid() != 0:
        pytest.skip("a second host needs root (network namespace, users)")
    for tool, package in (("ip", "iproute2"), ("setpriv", "util-linux"), ("git", "git")):
        if shutil.which(tool) is None:
            pytest.skip(missing(tool, f"apt-get install {package}"))
    if nginx_binary() is None:
        pytest.skip(missing("nginx", "apt-get install nginx"))
    if (why := postgres_missing()) is not None:
        pytest.skip(missing(why))
    if not (REPO_ROOT / ".venv" / "bin" / "python").exists():
        pytest.skip(missing(".venv", "make .venv/.installed"))


@dataclass
class GitServer:
    """`git daemon` serving a bare repository that holds HEAD, on the host's veth address."""

    root: Path
    address: str
    port: int
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """What workers clone."""
        return f"git://{self.address}:{self.port}/fmnist.git"

    def start(self) -> None:
        """Serve (read only: no push), as nobody."""
        self.proc = subprocess.Popen(
            ["git", "daemon", "--reuseaddr", "--export-all", "--informative-errors",
             f"--listen={self.address}", f"--port={self.port}", f"--base-path={self.root}",
             "--user=nobody", "--group=nogroup", str(self.root)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        for _ in range(100):  # until it answers
            if sh("git", "ls-remote", self.url, check=False, timeout=10).returncode == 0:
                return
            subprocess.run(["sleep", "0.1"], check=False)
        raise RuntimeError(f"git daemon did not answer on {self.url}")

    def stop(self) -> None:
        """Gone: a worker's clone is refused from now on."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@dataclass
class Remote:
    """Everything the family's tests look at."""

    host: SecondHost
    git: GitServer
    stack: Stack
    checkout: Path  # the clean clone the deployments were applied from
    commit: str  # its HEAD: the commit deployed
    deployments: dict
    script: Path  # the worker's one file
    worker: subprocess.Popen | None = None
    worker_log: Path | None = None  # what the second machine's worker prints (its console)

    def prefect_settings(self):
        """Prefect client settings for the stack (loopback: the test is on the stack's host)."""
        from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

        return temporary_settings(
            {
                PREFECT_API_URL: self.stack.prefect.api_url,
                PREFECT_API_AUTH_STRING: self.stack.secrets.prefect_auth_string,
            }
        )

    def mlflow_admin(self):
        """MLflow's clients log in as the stack's admin meanwhile."""
        return mlflow_login(MLFLOW_ADMIN, self.stack.secrets.mlflow_admin_password)

    def start_worker(self, venv: Path, log: Path, env: dict[str, str] | None = None):
        """`sh box1.sh` on the second host, with that environment's python first on PATH."""
        path = f"{venv}/bin:/usr/bin:/bin"
        full = {"PATH": path, "PYTHON": f"{venv}/bin/python", "TMPDIR": str(self.host.home)}
        self.worker_log = log
        return self.host.start(["sh", str(self.script)], full | (env or {}), log)


def _start_stack(state: Path, public: Public) -> Stack:
    """`up` with a public address on free ports, no gpu worker here, no deployments yet."""
    for attempt in range(3):
        prefect_tls, mlflow_tls = free_ports(2)
        public = Public(public.address, public.names, prefect_tls, mlflow_tls)
        stack = Stack(
            state, Ports.free(), durable=False, mlflow_workers=1, pools_=("cpu",), public=public
        )
        try:
            stack.up(deployments=False)
            return stack
        except StackError:
            stack.down()
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remote]:
    """The second host, the git server, the TLS stack, the deployments and the worker file."""
    _needs()
    from fmnist.conf import load_config
    from fmnist.stack.deployments import apply
    from fmnist.stack.remote_worker import worker_settings

    sweep([REPO_ROOT])  # what a run killed before its clean-up left behind
    host = SecondHost()
    state = temp_state_dir(f"fmnist-remote-stack-{os.getpid()}-")
    saved = {k: os.environ.get(k) for k in ("FMNIST_GPU_CONCURRENCY",)}
    git = None
    stack = None
    try:
        os.environ["FMNIST_GPU_CONCURRENCY"] = "4"  # the remote worker trains the four at once
        # Closed to the worker's user: the checkout (its venv, data/ and .stack/ included)
        # and this stack's state folder (secrets, logs, data, the servers' stores).
        host.open(closed_to=[REPO_ROOT, state])
        git = GitServer(host.root / "git", host.host_address, free_ports(1)[0])
        bare = git.root / "fmnist.git"
        sh("git", "init", "-q", "--bare", "-b", "main", str(bare))
        sh("git", "-C", str(bare), "config", "receive.shallowUpdate", "true")  # a CI clone
        sh("git", "-C", str(REPO_ROOT), "push", "-q", str(bare), "HEAD:refs/heads/main")
        for key in ("uploadpack.allowReachableSHA1InWant", "uploadpack.allowFilter"):
            sh("git", "-C", str(bare), "config", key, "true")
        sh("chown", "-R", "nobody:nogroup", str(git.root))  # the daemon's user: not "dubious"
        git.start()
        checkout = host.root / "deploy"
        sh("git", "clone", "-q", git.url, str(checkout))
        stack = _start_stack(state, Public(host.host_address))
        commit = sh("git", "-C", str(checkout), "rev-parse", "HEAD").stdout.strip()
        remote = Remote(host, git, stack, checkout, commit, {}, host.home / f"{WORKER}.sh")
        with remote.prefect_settings():
            cfg = load_config("smoke", overrides={"deploy.schedule.active": False})
            remote.deployments = apply(cfg, checkout)  # from git, checked
        text = worker_settings(stack, WORKER, "gpu", [EXPERIMENT])
        remote.script.write_text(text)
        os.chown(remote.script, host.uid, host.gid)
        remote.script.chmod(0o600)
        yield remote
    finally:
        if git is not None:
            git.stop()
        host.close()
        with contextlib.suppress(StackError):
            (stack or Stack(state)).down()
        shutil.rmtree(state, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
