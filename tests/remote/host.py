"""A second host on this machine, the way network tools test themselves: a network namespace
joined to this one by a veth pair (addresses the test assigns, no route anywhere else), a new
unprivileged user that this machine's files of ours are closed to (an ACL entry naming it,
on the checkout and the stack's state folder), and a Python environment of its own outside
them (the venv's packages, without our package). Everything is undone by `close`.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from fmnist.stack import REPO_ROOT
from tests.helpers import sweep_dead_sessions

_ACL = "system.posix_acl_access"
_ACL_ENTRY = struct.Struct("<HHI")
_UNDEFINED_ID = 0xFFFFFFFF
_USER_OBJ, _USER, _GROUP_OBJ, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x10, 0x20


def sh(*argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a command of this machine's (ip, useradd, ...), bounded."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=check)


def deny_acl(path: Path, uid: int) -> None:
    """An access ACL on path: uid alone gets no permission at all; everyone else keeps what
    the mode gives (the mask is the group's bits, so the mode's meaning is unchanged)."""
    mode = path.stat().st_mode
    entries = [
        (_USER_OBJ, (mode >> 6) & 7, _UNDEFINED_ID),
        (_USER, 0, uid),
        (_GROUP_OBJ, (mode >> 3) & 7, _UNDEFINED_ID),
        (_MASK, (mode >> 3) & 7, _UNDEFINED_ID),
        (_OTHER, mode & 7, _UNDEFINED_ID),
    ]
    data = struct.pack("<I", 2) + b"".join(_ACL_ENTRY.pack(*e) for e in entries)
    os.setxattr(path, _ACL, data)


def remove_acl(path: Path) -> None:
    """Back to the mode alone."""
    with contextlib.suppress(OSError):
        os.removexattr(path, _ACL)


def acl_users(path: Path) -> set[int]:
    """The uids named by path's access ACL (none without one)."""
    try:
        data = os.getxattr(path, _ACL)
    except OSError:
        return set()
    entries = [_ACL_ENTRY.unpack_from(data, 4 + i) for i in range(0, len(data) - 4, 8)]
    return {qualifier for tag, _, qualifier in entries if tag == _USER}


def sweep(closed_to: list[Path]) -> list[str]:
    """Undo what an earlier run killed before its clean-up left behind (its pid is in every
    name: fmnist-r<pid>): processes, namespace, veth, ACL entries, user, folders, stack."""
    swept = []
    names = {e.pw_name: e for e in pwd.getpwall() if e.pw_name.startswith("fmnist-r")}
    netns = sh("ip", "netns", "list", check=False).stdout.split()
    tags = {n.removeprefix("fmnist-") for n in [*names, *netns] if n.startswith("fmnist-r")}
    for tag in sorted(tags):
        pid = tag[1:]
        if not pid.isdigit() or psutil.pid_exists(int(pid)):
            continue  # a run in progress (or not ours)
        entry = names.get(f"fmnist-{tag}")
        if entry is not None:
            for proc in psutil.process_iter(["uids"]):
                if proc.info["uids"] and proc.info["uids"].real == entry.pw_uid:
                    with contextlib.suppress(psutil.Error):
                        proc.kill()
            for path in closed_to:
                if entry.pw_uid in acl_users(path):
                    remove_acl(path)
            sh("userdel", entry.pw_name, check=False)
            root = Path(entry.pw_dir).parent
            if root.name.startswith("fmnist-remote-"):
                for proc in psutil.process_iter(["cmdline"]):  # its git daemon (as nobody)
                    if any(str(root) in arg for arg in proc.info["cmdline"] or ()):
                        with contextlib.suppress(psutil.Error):
                            proc.kill()
                shutil.rmtree(root, ignore_errors=True)
        sh("ip", "netns", "del", f"fmnist-{tag}", check=False)
        sh("ip", "link", "del", f"fm{tag}h"[:15], check=False)
        swept.append(tag)
    # Stacks and folders by the pid in their names (a run killed half-way through `close`);
    # a stack's folder first ("fmnist-remote-stack-<pid>-"): the second prefix skips it.
    swept += sweep_dead_sessions("fmnist-remote-stack-", stacks=True)
    swept += sweep_dead_sessions("fmnist-remote-")
    return swept


def free_subnet() -> int:
    """An X whose 10.250.X.0/30 no interface here uses (tests on this machine may overlap)."""
    used = sh("ip", "-4", "-o", "addr").stdout
    start = os.getpid() % 200 + 20
    for x in [*range(start, 250), *range(20, start)]:
        if f"10.250.{x}." not in used:
            return x
    raise RuntimeError("no free 10.250.X.0/30")


@dataclass
class SecondHost:
    """The namespace, its user and its Python environment."""

    tag: str = field(default_factory=lambda: f"r{os.getpid()}")
    root: Path = field(
        default_factory=lambda: Path(tempfile.mkdtemp(prefix=f"fmnist-remote-{os.getpid()}-"))
    )
    closed_to: list[Path] = field(default_factory=list)
    processes: list[subprocess.Popen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.netns = f"fmnist-{self.tag}"
        self.user = f"fmnist-{self.tag}"
        x = free_subnet()
        self.host_address, self.address = f"10.250.{x}.1", f"10.250.{x}.2"
        self.host_if, self.ns_if = f"fm{self.tag}h"[:15], f"fm{self.tag}n"[:15]
        self.root.chmod(0o755)
        self.home = self.root / "home"
        self.venv = self.root / "venv"

    # -- set-up ------------------------------------------------------------------------------

    def open(self, closed_to: list[Path]) -> SecondHost:
        """Namespace, veth, user, environment; the folders closed to the user."""
        sh("ip", "netns", "add", self.netns)
        sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        sh("ip", "link", "set", self.ns_if, "netns", self.netns)
        sh("ip", "addr", "add", f"{self.host_address}/30", "dev", self.host_if)
        sh("ip", "link", "set", self.host_if, "up")
        sh("ip", "-n", self.netns, "addr", "add", f"{self.address}/30", "dev", self.ns_if)
        sh("ip", "-n", self.netns, "link", "set", self.ns_if, "up")
        sh("ip", "-n", self.netns, "link", "set", "lo", "up")
        sh("useradd", "--system", "--user-group", "--no-create-home", "--home-dir",
           str(self.home), "--shell", "/usr/sbin/nologin", self.user)  # fmt: skip
        entry = pwd.getpwnam(self.user)
        self.uid, self.gid = entry.pw_uid, entry.pw_gid
        self.home.mkdir(mode=0o700)
        os.chown(self.home, self.uid, self.gid)
        for path in closed_to:
            deny_acl(path, self.uid)
            self.closed_to.append(path)
        self.venv = self.environment("venv")
        return self

    def environment(self, name: str) -> Path:
        """A copy of the venv's packages (hard links: seconds, not gigabytes) without our
        package: no editable finder, no dist-info, no `fmnist` script."""
        venv = self.root / name
        sh("cp", "-al", str(REPO_ROOT / ".venv"), str(venv), timeout=300)
        site = next((venv / "lib").glob("python3*/site-packages"))
        for path in [*site.glob("__editable__*fashion_mnist*"), venv / "bin" / "fmnist"]:
            path.unlink()
        for path in site.glob("fashion_mnist_pipeline-*.dist-info"):
            shutil.rmtree(path)
        return venv

    def fake_version(self, venv: Path, package: str, version: str) -> None:
        """Make venv claim another version of package (a new METADATA file: the hard-linked
        original stays as it is)."""
        site = next((venv / "lib").glob("python3*/site-packages"))
        [dist] = [d for d in site.glob("*.dist-info") if d.name.split("-")[0].lower() == package]
        meta = dist / "METADATA"
        lines = meta.read_text(errors="replace").splitlines(keepends=True)
        text = "".join(f"Version: {version}\n" if ln.startswith("Version:") else ln for ln in lines)
        meta.unlink()
        meta.write_text(text)

    # -- running things there ----------------------------------------------------------------

    def argv(self, argv: list[str], env: dict[str, str]) -> list[str]:
        """argv as the user, in the namespace, with env and nothing of ours in it."""
        base = {"HOME": str(self.home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        return [
            "ip", "netns", "exec", self.netns,
            "setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups",
            "--", "env", "-i", *(f"{k}={v}" for k, v in (base | env).items()), *argv,
        ]  # fmt: skip

    def run(self, argv: list[str], env: dict[str, str] | None = None, timeout: float = 120):
        """Run there and wait (bounded); the CompletedProcess."""
        return subprocess.run(
            self.argv(argv, env or {}),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.home,
            check=False,
        )

    def python(self, code: str, venv: Path | None = None, timeout: float = 120) -> dict:
        """Run Python code there that prints one JSON document; that document."""
        python = str((venv or self.venv) / "bin" / "python")
        result = self.run([python, "-c", code], timeout=timeout)
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(result.stdout.strip().splitlines()[-1])

    def start(self, argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
        """Start a long-running process there (its own process group), output to log."""
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                self.argv(argv, env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.home,
                start_new_session=True,
            )
        self.processes.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, timeout: float = 30) -> None:
        """SIGTERM its group, SIGKILL what is left after timeout."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout)
                return
            except subprocess.TimeoutExpired:
                continue

    def user_processes(self) -> list[psutil.Process]:
        """Every live process of the user (flow runs included)."""
        found = []
        for proc in psutil.process_iter(["uids"]):
            if proc.info["uids"] and proc.info["uids"].real == getattr(self, "uid", -1):
                found.append(proc)
        return found

    # -- tear-down ---------------------------------------------------------------------------

    def close(self) -> None:
        """Processes, namespace (the veth goes with it), ACLs, user, files: whatever is there."""
        for proc in self.processes:
            self.stop(proc, timeout=10)
        deadline = time.monotonic() + 30
        while (left := self.user_processes()) and time.monotonic() < deadline:
            for proc in left:
                with contextlib.suppress(psutil.Error):
                    proc.kill()
            time.sleep(0.5)
        sh("ip", "netns", "del", self.netns, check=False)
        sh("ip", "link", "del", self.host_if, check=False)
        for path in self.closed_to:
            remove_acl(path)
        sh("userdel", self.user, check=False)
        shutil.rmtree(self.root, ignore_errors=True)
