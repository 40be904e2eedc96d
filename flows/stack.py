"""The native local service stack: PostgreSQL, Prefect server, MLflow server, workers; no Docker.

    python -m flows.stack up       start what is not running yet (idempotent), print the UI links
    python -m flows.stack status   each service with its pid, health and address
    python -m flows.stack down     stop workers, servers, then PostgreSQL; nothing left behind

Every service is a process of this machine bound to 127.0.0.1, started in its own session (so
stopping it stops its children too), logging to <state>/logs/NAME.log, its pid in
<state>/pids/NAME.pid. The state folder defaults to `.stack/` in the repository
(FMNIST_STACK_DIR); the ports to 5433, 4200 and 5000 (FMNIST_PG_PORT, FMNIST_PREFECT_PORT,
FMNIST_MLFLOW_PORT). Prefect and MLflow run as subprocesses from the virtual environment: this
module imports neither, so `status` and `down` answer at once.

The classes (Postgres, PrefectServer, MlflowServer, PrefectWorker) take an explicit state
folder and port, so tests start their own stack on free ports (tests/service_fixtures.py).
"""

from __future__ import annotations

import argparse
import contextlib
import grp
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
POOLS = ("cpu", "gpu")
PG_USER = "postgres"
DATABASES = ("prefect", "mlflow")
# Generous: on a 2-core machine busy with something else, Prefect's and MLflow's first start
# (imports plus database migrations) takes well over a minute.
START_TIMEOUT = float(os.environ.get("FMNIST_STACK_TIMEOUT", "240"))
STOP_TIMEOUT = 30.0
EXIT_NOT_RUNNING = 3  # what `status` returns when something is down, as LSB init scripts do

# The Popen objects of the processes this interpreter started: kept so they are never garbage
# collected while running (a ResourceWarning) and so a stopped one is reaped, not a zombie.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class StackError(RuntimeError):
    """A service could not be started or stopped; the message says why and names its log."""


# --------------------------------------------------------------------------------------------
# Processes


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    """Whether something already listens on 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        return s.connect_ex((HOST, port)) == 0


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgid) of a process from /proc, None if there is none."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[2])


def _cmdline(pid: int) -> str:
    """A process's command line, arguments joined by spaces ('' if it is gone)."""
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def pid_alive(pid: int) -> bool:
    """Whether pid is a live process; a zombie counts as gone (and is reaped if it is ours)."""
    proc = _CHILDREN.get(pid)
    if proc is not None and proc.poll() is not None:
        del _CHILDREN[pid]
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        pass
    stat = _proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def _processes() -> dict[int, tuple[str, int, int]]:
    """Every process of the machine: pid -> (state, ppid, pgid)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _proc_stat(int(entry.name))) is not None:
            table[int(entry.name)] = stat
    return table


def process_tree(pid: int) -> set[int]:
    """pid, its descendants and the members of its process group (live ones only)."""
    table = _processes()
    members = {p for p, (state, _, pgid) in table.items() if pgid == pid and state != "Z"}
    members.add(pid)
    # Descendants too: a child that made its own session (a flow run) has left the group.
    children: dict[int, list[int]] = {}
    for p, (_, ppid, _) in table.items():
        children.setdefault(ppid, []).append(p)
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in members:
                members.add(child)
                todo.append(child)
    return {p for p in members if pid_alive(p)}


def _signal(pids: Iterable[int], sig: int) -> None:
    for p in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, sig)


def _wait_gone(pids: set[int], timeout: float) -> set[int]:
    """Wait until none of pids lives; return those still alive at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        alive = {p for p in pids if pid_alive(p)}
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.2)


def kill_tree(pid: int, timeout: float = STOP_TIMEOUT, *, sig: int = signal.SIGTERM) -> None:
    """Signal a process, its group and its descendants; SIGKILL what outlives the timeout."""
    members = process_tree(pid)
    _signal(members, sig)
    left = _wait_gone(members | process_tree(pid), timeout)
    if left:
        _signal(left, signal.SIGKILL)
        left = _wait_gone(left, 10)
    if left:
        raise StackError(f"processes {sorted(left)} survived SIGKILL")


def _tail(path: Path, lines: int = 25) -> str:
    """The last lines of a log file, indented, for error messages."""
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return "    (no log)"
    return "\n".join("    " + line for line in text)


def _http_ok(url: str, timeout: float = 5) -> bool:
    """Whether GET url answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def _http_json(url: str, body: dict[str, Any] | None = None, timeout: float = 10) -> Any:
    """GET (or POST body as JSON to) url and decode the JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def venv_bin() -> Path:
    """The virtual environment's bin folder: the running interpreter's, else the repo's .venv."""
    here = Path(sys.executable).parent  # not resolved: a venv's python is a symlink
    return here if (here / "prefect").exists() else REPO_ROOT / ".venv" / "bin"


class Service:
    """One managed process: its command, environment, health check, log and pid files."""

    name: str
    marker: str  # in its command line, so a recycled pid is never taken for it

    def __init__(self, name: str, state_dir: Path, marker: str) -> None:
        self.name = name
        self.marker = marker
        self.state_dir = Path(state_dir).resolve()
        self.log_path = self.state_dir / "logs" / f"{name}.log"
        self.pid_path = self.state_dir / "pids" / f"{name}.pid"
        self._launched_at = 0.0  # time.time() of our launch(); 0 for one found running

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, pid={self.pid})"

    # What subclasses define.
    def command(self) -> list[str]:
        """The command line that starts the service."""
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        """The environment the service runs in."""
        return dict(os.environ)

    def healthy(self) -> bool:
        """Whether the service answers (its process being alive is checked apart)."""
        return True

    @property
    def address(self) -> str:
        """Where it listens, for `status`."""
        return ""

    def _popen_extra(self) -> dict[str, Any]:
        return {"cwd": REPO_ROOT}

    def _before_launch(self) -> None:
        """Preparation before the first start (a port check, a database folder)."""

    # The shared machinery.
    def _recorded_pid(self) -> int | None:
        try:
            return int(self.pid_path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    @property
    def pid(self) -> int | None:
        """The pid of the running service, None if it does not run."""
        pid = self._recorded_pid()
        if pid is None or not pid_alive(pid) or self.marker not in _cmdline(pid):
            return None
        return pid

    def running(self) -> bool:
        """Whether its process lives."""
        return self.pid is not None

    def launch(self) -> bool:
        """Start the process unless it runs already (then leave it alone); True if started."""
        if self.running():
            return False
        self._before_launch()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.pid_path.parent.mkdir(parents=True, exist_ok=True)
        argv = self.command()
        with open(self.log_path, "ab") as log:
            stamp = datetime.now().isoformat(timespec="seconds")
            log.write(f"\n=== {stamp} starting: {' '.join(argv)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                start_new_session=True,  # its own process group: stopping it stops its children
                **self._popen_extra(),
            )
        _CHILDREN[proc.pid] = proc
        self.pid_path.write_text(f"{proc.pid}\n")
        self._launched_at = time.time()
        return True

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until the service is healthy; StackError (with its log's tail) if it dies."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running():
                raise StackError(
                    f"{self.name} is not running (it exited?); {self.log_path} ends with:\n"
                    + _tail(self.log_path)
                )
            if self.healthy():
                return
            if time.monotonic() >= deadline:
                raise StackError(
                    f"{self.name} not healthy after {timeout:.0f} s; {self.log_path} ends with:\n"
                    + _tail(self.log_path)
                )
            time.sleep(0.5)

    def start(self, timeout: float = START_TIMEOUT) -> bool:
        """launch() then wait_ready(); True if it was started now, False if it ran already."""
        started = self.launch()
        try:
            self.wait_ready(timeout)
        except BaseException:  # Ctrl-C included: never leave a half-started service behind
            if started:
                self.stop()
            raise
        return started

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the process with its children (SIGTERM, SIGKILL after timeout); forget its pid."""
        pid = self.pid
        if pid is not None:
            kill_tree(pid, timeout)
        self.pid_path.unlink(missing_ok=True)


def start_all(services: Sequence[Service], timeout: float = START_TIMEOUT) -> list[Service]:
    """Launch several services at once, then wait for each; on failure stop those just started."""
    started = []
    try:
        for service in services:
            if service.launch():
                started.append(service)
        for service in services:
            service.wait_ready(timeout)
    except BaseException:
        stop_all(started)
        raise
    return started


def stop_all(services: Sequence[Service], timeout: float = STOP_TIMEOUT) -> None:
    """Stop several services in parallel (each with its children)."""
    if not services:
        return
    with ThreadPoolExecutor(len(services)) as pool:
        for future in [pool.submit(s.stop, timeout) for s in services]:
            future.result()


# --------------------------------------------------------------------------------------------
# PostgreSQL


def find_pg_bin() -> Path | None:
    """The PostgreSQL server binaries' folder (FMNIST_PG_BIN, Debian's newest, or the PATH)."""
    if env := os.environ.get("FMNIST_PG_BIN"):
        return Path(env)
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: [int(x) for x in p.parent.parent.name.split(".") if x.isdigit()],
    )
    if debian:
        return debian[-1].parent
    found = shutil.which("postgres")
    return Path(found).parent if found and (Path(found).parent / "initdb").exists() else None


def _pg_identity() -> tuple[int, int] | None:
    """(uid, gid) of the `postgres` user when we are root (PostgreSQL refuses root), else None."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(PG_USER)
    except KeyError:
        raise StackError(
            f"PostgreSQL refuses to run as root and there is no {PG_USER!r} user: "
            "apt-get install postgresql creates it"
        ) from None
    return entry.pw_uid, entry.pw_gid


def postgres_missing() -> str | None:
    """Why PostgreSQL cannot run here (no binaries, root without a postgres user), else None."""
    if find_pg_bin() is None:
        return "PostgreSQL server binaries not found: apt-get install postgresql"
    try:
        _pg_identity()
    except StackError as exc:
        return str(exc)
    return None


def _unsearchable_ancestor(path: Path, uid: int, gid: int) -> Path | None:
    """The first existing ancestor of path that user uid (group gid) cannot traverse."""
    groups = {gid} | {g.gr_gid for g in _groups_of(uid)}
    for folder in reversed(path.parents):
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


def _groups_of(uid: int) -> list[Any]:
    name = pwd.getpwuid(uid).pw_name
    return [g for g in grp.getgrall() if name in g.gr_mem]


class Postgres(Service):
    """A PostgreSQL cluster in a folder of its own, on 127.0.0.1 only, trusting local users.

    durable=False turns off fsync for tests: a crash would lose the data, which tests throw
    away anyway, and the Prefect/MLflow migrations run several times faster.
    """

    def __init__(
        self,
        state_dir: Path,
        port: int,
        *,
        data_dir: Path | None = None,
        durable: bool = True,
        bin_dir: Path | None = None,
    ) -> None:
        super().__init__("postgres", state_dir, marker="postgres")
        self.port = port
        self.data_dir = Path(data_dir).resolve() if data_dir else self.state_dir / "postgres"
        self.durable = durable
        found = bin_dir or find_pg_bin()
        if found is None:
            raise StackError("PostgreSQL server binaries not found: apt-get install postgresql")
        self.bin_dir = Path(found)
        self.identity = _pg_identity()

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def url(self, database: str = "postgres", driver: str = "postgresql") -> str:
        """SQLAlchemy-style URL of one database, e.g. driver='postgresql+asyncpg' for Prefect."""
        return f"{driver}://{PG_USER}@{HOST}:{self.port}/{database}"

    def _recorded_pid(self) -> int | None:
        # PostgreSQL's own lock file first: it also finds a postmaster started by hand.
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return super()._recorded_pid()

    def _popen_extra(self) -> dict[str, Any]:
        # As root, run as `postgres` (PostgreSQL refuses root) without root's groups; cwd "/"
        # because the caller's folder may be closed to that user.
        if self.identity is None:
            return {"cwd": self.data_dir}
        uid, gid = self.identity
        return {"cwd": "/", "user": uid, "group": gid, "extra_groups": []}

    def _run_as_owner(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **self._popen_extra(),
        )

    def initialized(self) -> bool:
        """Whether initdb has run in the data folder."""
        return (self.data_dir / "PG_VERSION").exists()

    def initdb(self) -> None:
        """Create the cluster (superuser `postgres`, trust authentication) unless it exists."""
        if self.initialized():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.identity is not None:
            uid, gid = self.identity
            if (blocked := _unsearchable_ancestor(self.data_dir, uid, gid)) is not None:
                raise StackError(
                    f"PostgreSQL runs as {PG_USER!r} (you are root), which cannot enter {blocked}; "
                    "pick a state folder it can reach, e.g. FMNIST_STACK_DIR=/var/tmp/fmnist-stack"
                )
            os.chown(self.data_dir, uid, gid)
        os.chmod(self.data_dir, 0o700)
        argv = [
            str(self.bin_dir / "initdb"),
            "--pgdata",
            str(self.data_dir),
            "--username",
            PG_USER,
            "--auth",
            "trust",  # local only (127.0.0.1 and the socket in the data folder)
            "--encoding",
            "UTF8",
            "--no-locale",  # the C locale: never depends on the machine's installed locales
            "--no-instructions",
        ]
        if not self.durable:
            argv.append("--no-sync")
        result = self._run_as_owner(argv, timeout=300)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a") as log:
            log.write(result.stdout + result.stderr)
        if result.returncode != 0:
            raise StackError(f"initdb failed ({result.returncode}):\n{result.stderr.strip()}")

    def _before_launch(self) -> None:
        self.initdb()
        if port_in_use(self.port):
            raise StackError(f"port {self.port} is in use already; choose another (FMNIST_PG_PORT)")

    def command(self) -> list[str]:
        socket_dir = str(self.data_dir)
        # A unix socket path is limited to 107 bytes; with a deep folder, TCP alone will do.
        if len(f"{socket_dir}/.s.PGSQL.{self.port}") > 100:
            socket_dir = ""
        argv = [
            str(self.bin_dir / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-c",
            f"listen_addresses={HOST}",
            "-c",
            f"unix_socket_directories={socket_dir}",
        ]
        if not self.durable:
            for setting in ("fsync=off", "synchronous_commit=off", "full_page_writes=off"):
                argv += ["-c", setting]
        return argv

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        return env

    def connect(self, database: str = "postgres") -> Any:
        """A psycopg2 connection (autocommit) to one database."""
        import psycopg2

        conn = psycopg2.connect(
            host=HOST, port=self.port, user=PG_USER, dbname=database, connect_timeout=5
        )
        conn.autocommit = True
        return conn

    def healthy(self) -> bool:
        try:
            with contextlib.closing(self.connect()) as conn, conn.cursor() as cur:
                cur.execute("SELECT 1")
                return cur.fetchone() == (1,)
        except Exception:  # any connection error means "not yet"
            return False

    def create_databases(self, names: Iterable[str] = DATABASES) -> list[str]:
        """Create the databases that do not exist yet; return those created."""
        from psycopg2 import sql

        created = []
        with contextlib.closing(self.connect()) as conn, conn.cursor() as cur:
            for name in names:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                    created.append(name)
        return created

    def start(self, timeout: float = START_TIMEOUT) -> bool:
        """Start (initdb first if needed), wait for connections, create prefect and mlflow."""
        started = super().start(timeout)
        self.create_databases()
        return started

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """pg_ctl stop -m fast (clean shutdown), then make sure no process is left."""
        pid = self.pid
        if pid is not None:
            self._run_as_owner(
                [
                    str(self.bin_dir / "pg_ctl"),
                    "stop",
                    "-D",
                    str(self.data_dir),
                    "-m",
                    "fast",
                    "-w",
                    "-t",
                    str(int(timeout)),
                ],
                timeout=timeout + 10,
            )
            _wait_gone({pid}, 10)
        super().stop(timeout)


# --------------------------------------------------------------------------------------------
# Prefect and MLflow


def _prefect_env(state_dir: Path, api_url: str) -> dict[str, str]:
    """What every Prefect process of the stack shares: its home, its API, no prompts."""
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=str(state_dir / "prefect"),
        PREFECT_API_URL=api_url,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_CLI_PROMPT="false",  # stdin is /dev/null: a prompt would only hang or fail
    )
    return env


class _HttpServer(Service):
    """A server from the virtual environment listening on 127.0.0.1:port."""

    port_variable = ""  # the environment variable that picks another port
    port_hint = ""

    def __init__(
        self, name: str, state_dir: Path, marker: str, port: int, bin_dir: Path | None
    ) -> None:
        super().__init__(name, state_dir, marker=marker)
        self.port = port
        self.bin_dir = Path(bin_dir) if bin_dir else venv_bin()

    @property
    def url(self) -> str:
        """Where browsers and clients reach it."""
        return f"http://{HOST}:{self.port}"

    @property
    def address(self) -> str:
        return self.url

    def _before_launch(self) -> None:
        if port_in_use(self.port):
            raise StackError(
                f"port {self.port} is in use already{self.port_hint}; choose another "
                f"({self.port_variable})"
            )


class PrefectServer(_HttpServer):
    """`prefect server start` on 127.0.0.1:port over a PostgreSQL database (asyncpg URL)."""

    port_variable = "FMNIST_PREFECT_PORT"

    def __init__(
        self, state_dir: Path, port: int, database_url: str, *, bin_dir: Path | None = None
    ) -> None:
        super().__init__("prefect-server", state_dir, "prefect server start", port, bin_dir)
        self.database_url = database_url

    @property
    def api_url(self) -> str:
        """What PREFECT_API_URL should be."""
        return f"{self.url}/api"

    def command(self) -> list[str]:
        return [
            str(self.bin_dir / "prefect"),
            "server",
            "start",
            "--host",
            HOST,
            "--port",
            str(self.port),
        ]

    def environment(self) -> dict[str, str]:
        env = _prefect_env(self.state_dir, self.api_url)
        env.update(
            PREFECT_SERVER_DATABASE_CONNECTION_URL=self.database_url,
            PREFECT_UI_API_URL=self.api_url,
        )
        return env

    def healthy(self) -> bool:
        return _http_ok(f"{self.api_url}/health")


class MlflowServer(_HttpServer):
    """`mlflow server` on 127.0.0.1:port: a SQL backend store, artifacts served by the server.

    --serve-artifacts: runs log to mlflow-artifacts:/ URIs that the server stores under
    artifacts_dir, so clients and workers need no access to that folder.
    """

    port_variable = "FMNIST_MLFLOW_PORT"
    port_hint = " (`make ui`?)"

    def __init__(
        self,
        state_dir: Path,
        port: int,
        backend_uri: str,
        *,
        artifacts_dir: Path | None = None,
        workers: int = 2,
        bin_dir: Path | None = None,
    ) -> None:
        super().__init__("mlflow-server", state_dir, "mlflow server", port, bin_dir)
        self.backend_uri = backend_uri
        self.artifacts_dir = (
            Path(artifacts_dir).resolve() if artifacts_dir else self.state_dir / "mlartifacts"
        )
        self.workers = workers

    def _before_launch(self) -> None:
        super()._before_launch()
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        # 127.0.0.1 is among the hosts MLflow's security middleware allows by default
        # (localhost and private addresses), so no --allowed-hosts is needed here.
        return [
            str(self.bin_dir / "mlflow"),
            "server",
            "--backend-store-uri",
            self.backend_uri,
            "--serve-artifacts",
            "--artifacts-destination",
            str(self.artifacts_dir),
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
        ]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        # MLflow's job runner (GenAI evaluation, prompt optimisation) is seven more Python
        # processes and a /dev/shm folder it never removes; this pipeline uses none of it.
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        return env

    def healthy(self) -> bool:
        return _http_ok(f"{self.url}/health")


class PrefectWorker(Service):
    """`prefect worker start --pool POOL` against a server, running flows from the repo root."""

    def __init__(
        self,
        state_dir: Path,
        pool: str,
        api_url: str,
        tracking_uri: str,
        *,
        bin_dir: Path | None = None,
        cwd: Path = REPO_ROOT,
    ) -> None:
        super().__init__(f"worker-{pool}", state_dir, marker=f"worker start --pool {pool}")
        self.pool = pool
        self.api_url = api_url
        self.tracking_uri = tracking_uri
        self.bin_dir = Path(bin_dir) if bin_dir else venv_bin()
        self.cwd = Path(cwd)

    @property
    def address(self) -> str:
        return f"pool {self.pool}"

    def _popen_extra(self) -> dict[str, Any]:
        return {"cwd": self.cwd}

    def command(self) -> list[str]:
        return [
            str(self.bin_dir / "prefect"),
            "worker",
            "start",
            "--pool",
            self.pool,
            "--name",
            self.name,
        ]

    def environment(self) -> dict[str, str]:
        env = _prefect_env(self.state_dir, self.api_url)
        env.update(
            MLFLOW_TRACKING_URI=self.tracking_uri,
            KERAS_BACKEND="tensorflow",
            TF_CPP_MIN_LOG_LEVEL="2",
        )
        return env

    def heartbeat(self) -> datetime | None:
        """This worker's last heartbeat as the server saw it, None if it never sent one."""
        try:
            workers = _http_json(f"{self.api_url}/work_pools/{self.pool}/workers/filter", {})
        except (OSError, urllib.error.URLError, ValueError):
            return None
        for worker in workers or []:
            if worker.get("name") == self.name and worker.get("last_heartbeat_time"):
                return datetime.fromisoformat(worker["last_heartbeat_time"])
        return None

    def healthy(self) -> bool:
        # A heartbeat from this very process: the server remembers a worker of the same name
        # from an earlier start.
        beat = self.heartbeat()
        return beat is not None and beat.timestamp() >= self._launched_at - 1


def create_work_pools(
    api_url: str,
    pools: Iterable[str] = POOLS,
    *,
    state_dir: Path,
    bin_dir: Path | None = None,
    timeout: float = START_TIMEOUT,
) -> None:
    """`prefect work-pool create NAME --type process` for each pool (in parallel); an
    existing pool is fine."""
    prefect = str((Path(bin_dir) if bin_dir else venv_bin()) / "prefect")
    env = _prefect_env(Path(state_dir).resolve(), api_url)
    procs = {
        pool: subprocess.Popen(
            [prefect, "work-pool", "create", pool, "--type", "process"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=REPO_ROOT,
        )
        for pool in pools
    }
    failures = []
    for pool, proc in procs.items():
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        if proc.returncode != 0 and "already exists" not in out:
            failures.append(f"work pool {pool!r} ({proc.returncode}):\n{out.strip()}")
    if failures:
        raise StackError("could not create " + "\n".join(failures))


def apply_deployments(
    state_dir: Path, api_url: str, tracking_uri: str, *, timeout: float = 600
) -> bool:
    """`python -m flows.deployments apply` against the stack; False (with a warning) if that
    module does not exist."""
    if not (REPO_ROOT / "flows" / "deployments.py").is_file():
        print("warning: flows/deployments.py not found; deployments not applied", flush=True)
        return False
    state_dir = Path(state_dir).resolve()
    log_path = state_dir / "logs" / "deployments.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = _prefect_env(state_dir, api_url)
    env.update(
        MLFLOW_TRACKING_URI=tracking_uri, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2"
    )
    with open(log_path, "ab") as log:
        result = subprocess.run(
            [str(venv_bin() / "python"), "-m", "flows.deployments", "apply"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO_ROOT,
            timeout=timeout,
            check=False,
        )
    if result.returncode != 0:
        raise StackError(
            f"flows.deployments apply failed ({result.returncode}); {log_path} ends with:\n"
            + _tail(log_path)
        )
    return True


# --------------------------------------------------------------------------------------------
# The stack: up, down, status


@dataclass(frozen=True)
class Ports:
    """The stack's three ports."""

    postgres: int = 5433
    prefect: int = 4200
    mlflow: int = 5000

    @classmethod
    def from_env(cls) -> Ports:
        """Defaults, overridden by FMNIST_PG_PORT, FMNIST_PREFECT_PORT, FMNIST_MLFLOW_PORT."""
        default = cls()
        return cls(
            postgres=int(os.environ.get("FMNIST_PG_PORT", default.postgres)),
            prefect=int(os.environ.get("FMNIST_PREFECT_PORT", default.prefect)),
            mlflow=int(os.environ.get("FMNIST_MLFLOW_PORT", default.mlflow)),
        )


def default_state_dir() -> Path:
    """FMNIST_STACK_DIR, else `.stack/` in the repository."""
    return Path(os.environ.get("FMNIST_STACK_DIR", REPO_ROOT / ".stack")).resolve()


def temp_state_dir(prefix: str = "fmnist-stack-") -> Path:
    """A fresh state folder under the system temp dir that the `postgres` user can enter."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    # mkdtemp makes it 0700; as root, PostgreSQL (user postgres) must be able to pass through.
    path.chmod(0o755)
    return path


class Stack:
    """The services of one state folder: PostgreSQL, Prefect server, MLflow server, workers."""

    def __init__(
        self,
        state_dir: Path | None = None,
        ports: Ports | None = None,
        *,
        durable: bool = True,
        pools: Sequence[str] = POOLS,
        mlflow_workers: int = 2,
    ) -> None:
        self.state_dir = Path(state_dir).resolve() if state_dir else default_state_dir()
        self.ports = ports or self.saved_ports() or Ports.from_env()
        self.postgres = Postgres(self.state_dir, self.ports.postgres, durable=durable)
        self.prefect = PrefectServer(
            self.state_dir,
            self.ports.prefect,
            database_url=self.postgres.url("prefect", driver="postgresql+asyncpg"),
        )
        self.mlflow = MlflowServer(
            self.state_dir,
            self.ports.mlflow,
            # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg (3); the venv has psycopg2.
            backend_uri=self.postgres.url("mlflow", driver="postgresql+psycopg2"),
            workers=mlflow_workers,
        )
        self.workers = [
            PrefectWorker(self.state_dir, pool, self.prefect.api_url, self.mlflow.url)
            for pool in pools
        ]

    @property
    def services(self) -> list[Service]:
        """All of them, in start order."""
        return [self.postgres, self.prefect, self.mlflow, *self.workers]

    @property
    def _ports_file(self) -> Path:
        return self.state_dir / "stack.json"

    def saved_ports(self) -> Ports | None:
        """The ports the last `up` used, None if it never ran here."""
        try:
            return Ports(**json.loads(self._ports_file.read_text())["ports"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def pids(self) -> dict[str, int | None]:
        """Service name -> pid (None when it does not run)."""
        return {s.name: s.pid for s in self.services}

    def up(self, *, deployments: bool = True, timeout: float = START_TIMEOUT) -> None:
        """Start whatever does not run; leave running services alone; print the UI links."""
        saved = self.saved_ports()
        if saved and saved != self.ports and any(s.running() for s in self.services):
            raise StackError(
                f"the stack in {self.state_dir} runs with {saved}, not {self.ports}; "
                "run `python -m flows.stack down` first to change ports"
            )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._ports_file.write_text(json.dumps({"ports": asdict(self.ports)}, indent=2) + "\n")

        self._report(self.postgres, self.postgres.start(timeout))
        self._start_group([self.prefect, self.mlflow], timeout)
        create_work_pools(
            self.prefect.api_url,
            [w.pool for w in self.workers],
            state_dir=self.state_dir,
            timeout=timeout,
        )
        self._start_group(self.workers, timeout)
        if deployments:
            apply_deployments(self.state_dir, self.prefect.api_url, self.mlflow.url)
        print(f"\nPrefect dashboard  {self.prefect.url}")
        print(f"MLflow UI          {self.mlflow.url}", flush=True)

    def _start_group(self, services: Sequence[Service], timeout: float) -> None:
        launched = {s.name: s.launch() for s in services}
        for s in services:
            s.wait_ready(timeout)
            self._report(s, launched[s.name])

    @staticmethod
    def _report(service: Service, started: bool) -> None:
        what = "started" if started else "already running"
        print(f"{service.name:<15} {what:<16} pid {service.pid!s:<8} {service.address}", flush=True)

    def down(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop workers, then the servers, then PostgreSQL; StackError if a process survives."""
        stop_all(self.workers, timeout)
        stop_all([self.prefect, self.mlflow], timeout)
        self.postgres.stop(timeout)
        left = {name: pid for name, pid in self.pids().items() if pid is not None}
        if left:
            raise StackError(f"still running after down: {left}")

    def status(self) -> bool:
        """Print each service's pid, health and address; True if all run and answer."""
        ok = True
        for s in self.services:
            pid = s.pid
            state = "stopped" if pid is None else ("healthy" if s.healthy() else "unhealthy")
            ok &= state == "healthy"
            print(f"{s.name:<15} {state:<10} pid {pid or '-':<8} {s.address}")
        print(f"state folder: {self.state_dir} (logs in logs/)", flush=True)
        return ok


def up(
    state_dir: Path | None = None,
    ports: Ports | None = None,
    *,
    deployments: bool = True,
    durable: bool = True,
    timeout: float = START_TIMEOUT,
) -> Stack:
    """Start the whole stack (idempotent: what runs and answers is left alone)."""
    stack = Stack(state_dir, ports or Ports.from_env(), durable=durable)
    stack.up(deployments=deployments, timeout=timeout)
    return stack


def down(state_dir: Path | None = None, timeout: float = STOP_TIMEOUT) -> None:
    """Stop the whole stack of a state folder; nothing of it is left running."""
    Stack(state_dir).down(timeout)


def status(state_dir: Path | None = None) -> bool:
    """Print the stack's state; True if every service runs and answers."""
    return Stack(state_dir).status()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m flows.stack up|down|status`."""
    parser = argparse.ArgumentParser(
        prog="python -m flows.stack", description="The local PostgreSQL/Prefect/MLflow stack."
    )
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where data, logs and pids live (default: FMNIST_STACK_DIR or .stack/)",
    )
    parser.add_argument(
        "--no-deployments",
        action="store_true",
        help="up: do not run `python -m flows.deployments apply`",
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            up(args.state_dir, deployments=not args.no_deployments)
        elif args.command == "down":
            down(args.state_dir)
            print("stack stopped")
        else:
            return 0 if status(args.state_dir) else EXIT_NOT_RUNNING
    except StackError as exc:
        print(f"stack: {exc}", file=sys.stderr)
        if args.command == "up":
            print(
                "stack: what did start still runs; see `status`, or stop it with `down`",
                file=sys.stderr,
            )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
