"""The stack of one state folder: up (idempotent), down (nothing left), status.

Where it lives and on which ports: stack/ports.py. Who runs what: stack/users.py.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

from fmnist.stack import POOLS, REPO_ROOT, START_TIMEOUT, StackError, mlflow_setup, pools, secrets
from fmnist.stack.mlflow_server import MLFLOW_PIPELINE_USER, MLFLOW_VIEWER, MlflowServer
from fmnist.stack.ports import (  # noqa: F401 (free_ports, temp_state_dir: for tests)
    Ports,
    default_state_dir,
    free_ports,
    port_in_use,
    temp_state_dir,
)
from fmnist.stack.postgres import Postgres
from fmnist.stack.prefect_services import PrefectServer, PrefectWorker
from fmnist.stack.proxy import Proxy, Public
from fmnist.stack.services import venv_bin
from fmnist.stack.serving_service import ServingService
from fmnist.stack.supervisor import RUNNING, Supervisor
from fmnist.stack.users import (
    ServiceUser,
    check_reachable,
    check_separate,
    chown_tree,
    proxy_user,
    server_user,
    worker_user,
)

EXIT_NOT_RUNNING = 3  # what `status` returns when something is down, as LSB init scripts do


class Service(Protocol):
    """What up/status need of each service."""

    name: str

    def healthy(self) -> bool: ...


class Stack:
    """PostgreSQL, the Prefect server, the MLflow server and the workers of one state folder."""

    def __init__(
        self,
        state_dir: Path | None = None,
        ports: Ports | None = None,
        *,
        durable: bool = True,
        pools_: Sequence[str] | None = None,
        mlflow_workers: int = 2,
        public: Public | None = None,
    ) -> None:
        self.state_dir = Path(state_dir).resolve() if state_dir else default_state_dir()
        self.ports = ports or self.saved_ports() or Ports.from_env()
        # Where other machines reach it (TLS only: stack/proxy.py); None: loopback only.
        self.public = public or Public.from_env() or self.saved_public()
        self.durable = durable
        # The pools this machine's workers serve (FMNIST_LOCAL_WORKERS, else what the last
        # `up` served, else all); every pool exists whoever serves it.
        self.pool_names = (
            tuple(pools_)
            if pools_ is not None
            else pools.local_worker_pools() or self.saved_pools() or POOLS
        )
        self.mlflow_workers = mlflow_workers
        self.supervisor = Supervisor(self.state_dir)
        self._secrets: secrets.Secrets | None = None

    # -- the parts --------------------------------------------------------------------------

    @property
    def secrets(self) -> secrets.Secrets:
        """The stack's secrets (generated on the first `up`)."""
        if self._secrets is None:
            self._secrets = secrets.load(self.state_dir, create=False)
        return self._secrets

    @property
    def postgres(self) -> Postgres:
        """The PostgreSQL cluster."""
        return Postgres(self.state_dir, self.ports.postgres, self.secrets, durable=self.durable)

    @property
    def prefect(self) -> PrefectServer:
        """The Prefect server."""
        return PrefectServer(
            self.state_dir, self.ports.prefect, self.postgres, self.secrets, self.public
        )

    @property
    def mlflow(self) -> MlflowServer:
        """The MLflow tracking server."""
        return MlflowServer(
            self.state_dir,
            self.ports.mlflow,
            self.postgres,
            self.secrets,
            self.mlflow_workers,
            self.public,
        )

    @property
    def proxy(self) -> Proxy | None:
        """The TLS front on the public address (None: loopback only)."""
        if self.public is None or not self.public.tls:
            return None
        return Proxy(self.state_dir, self.public, self.ports.prefect, self.ports.mlflow)

    @property
    def workers(self) -> list[PrefectWorker]:
        """The Prefect workers."""
        prefect, mlflow = self.prefect, self.mlflow
        return [
            PrefectWorker(self.state_dir, p, prefect, mlflow, name=n, limit=lim, extra_env=env)
            for p, n, lim, env in pools.worker_specs(self.pool_names)
        ]

    @property
    def serving(self) -> ServingService:
        """The serving service (the champion over HTTP, following promotions)."""
        return ServingService(self.state_dir, self.ports.serving, self.mlflow, self.secrets)

    @property
    def program_names(self) -> list[str]:
        """supervisord's program names, in start order."""
        workers = [name for _, name, _, _ in pools.worker_specs(self.pool_names)]
        front = ["proxy"] if self.proxy else []
        return [
            "postgres",
            "prefect-server",
            "mlflow-server",
            *front,
            *workers,
            ServingService.name,
        ]

    @property
    def _ports_file(self) -> Path:
        return self.state_dir / "stack.json"

    def _saved(self) -> dict[str, Any]:
        """What the last `up` wrote to stack.json ({} if it never ran here, or it is unreadable)."""
        try:
            saved = json.loads(self._ports_file.read_text())
        except (OSError, ValueError):
            return {}
        return saved if isinstance(saved, dict) else {}

    def saved_ports(self) -> Ports | None:
        """The ports the last `up` used, None if it never ran here."""
        try:
            return Ports(**self._saved()["ports"])
        except (KeyError, TypeError):
            return None

    def saved_public(self) -> Public | None:
        """The public address the last `up` served, None if none (or it never ran here)."""
        saved = self._saved().get("public")
        try:
            return Public(**{**saved, "names": tuple(saved["names"])}) if saved else None
        except (KeyError, TypeError):
            return None

    def saved_pools(self) -> tuple[str, ...] | None:
        """The pools the last `up` started workers for, None if it never ran here."""
        try:
            return tuple(name for name in self._saved()["local_workers"] if name in POOLS)
        except (KeyError, TypeError):
            return None

    def pids(self) -> dict[str, int | None]:
        """Program name -> pid (None when it does not run)."""
        return {name: self.supervisor.program_pid(name) for name in self.program_names}

    # -- up ---------------------------------------------------------------------------------

    def up(self, *, deployments: bool = True, timeout: float = START_TIMEOUT) -> None:
        """Start whatever does not run; leave running services alone; print the UI links."""
        running = self.supervisor.running()
        saved = self.saved_ports()
        if running and saved and saved != self.ports:
            raise StackError(
                f"the stack in {self.state_dir} runs with {saved}, not {self.ports}; "
                "run `python -m fmnist.stack down` first to change ports"
            )
        if self.public is not None:
            self.public.check()  # plain HTTP off loopback: refused before anything starts
        self.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o755)  # postgres and the services' users pass through
        public = asdict(self.public) if self.public else None
        # started_at: when this `up` began (docs/remote.md measures from it).
        saved = {
            "ports": asdict(self.ports),
            "public": public,
            "local_workers": list(self.pool_names),
            "started_at": time.time(),
        }
        self._ports_file.write_text(json.dumps(saved, indent=2) + "\n")
        self._secrets = secrets.load(self.state_dir)  # generated (0600) on the first `up`
        server, worker = server_user(), worker_user()
        check_separate(server, worker)
        check_reachable([server, worker], [REPO_ROOT, venv_bin(), self.state_dir], venv_bin())
        postgres = self.postgres
        postgres.initdb()
        prefect, mlflow, workers, serving = self.prefect, self.mlflow, self.workers, self.serving
        if not running:
            for port in asdict(self.ports).values():
                if port_in_use(port):
                    raise StackError(
                        f"port {port} is in use already; choose others (FMNIST_PG_PORT, "
                        "FMNIST_PREFECT_PORT, FMNIST_MLFLOW_PORT, FMNIST_SERVING_PORT; "
                        "`make ui` uses 5000, `make serve` 5001)"
                    )
            programs = [postgres.program(), prefect.program(server), mlflow.program(server)]
            if self.proxy is not None:
                programs.append(self.proxy.program(self._proxy_user(worker)))
            programs += [w.program(worker) for w in workers]
            programs.append(serving.program(server))
            self._prepare_data_dir(worker)
            self.supervisor.write_config(programs)
            self.supervisor.start()

        self.supervisor.start_and_wait([postgres], timeout)
        postgres.create_roles_and_databases()
        self.supervisor.start_and_wait([prefect, mlflow], timeout)
        if self.proxy is not None:
            self.supervisor.start_and_wait([self.proxy], timeout)
        passwords = (self.secrets.mlflow_admin_password, self.secrets.mlflow_pipeline_password)
        mlflow_setup.setup(mlflow.url, *passwords, self.secrets.mlflow_viewer_password)
        # The gpu pool's default Keras backend: this environment's (none: the profile decides).
        with prefect.client() as client:
            pools.ensure_pools(client, POOLS, os.environ.get("KERAS_BACKEND", ""))
        self.supervisor.start_and_wait([*workers, serving], timeout)
        if deployments:
            self.apply_deployments()
        print(f"\nPrefect dashboard  {prefect.url}")
        print(f"MLflow UI          {mlflow.url}")
        if self.proxy is not None:
            print(f"other machines     {self.public.prefect_url}  {self.public.mlflow_url}")
            print(f"CA of those        {self.proxy.ca_file} (docs/remote.md)")
        print(f"serving            {serving.url}  (the champion; basic auth: user serving)")
        print(
            f"credentials        in {self.state_dir / secrets.SECRETS_FILE} (mode 0600; the "
            f"README says which is which); MLflow users {MLFLOW_VIEWER} (read-only), "
            f"{MLFLOW_PIPELINE_USER}, admin",
            flush=True,
        )

    @staticmethod
    def _proxy_user(worker: ServiceUser | None) -> ServiceUser | None:
        """nginx's user: never the workers' (flow runs would read the TLS key)."""
        user = proxy_user()
        if user is not None and worker is not None and user.uid == worker.uid:
            raise StackError("the TLS front and the workers would run as one user")
        return user

    def _prepare_data_dir(self, worker: ServiceUser | None) -> None:
        """Flow runs write the profiles' relative data folders (data/...) in the repository:
        as root, hand data/ to the worker user (root keeps access all the same)."""
        if worker is None:
            return
        data = REPO_ROOT / "data"
        data.mkdir(exist_ok=True)
        chown_tree(data, worker)

    def client_env(self) -> dict[str, str]:
        """What a client of this stack needs in its environment (secrets included)."""
        return {
            "PREFECT_API_URL": self.prefect.api_url,
            "PREFECT_API_AUTH_STRING": self.secrets.prefect_auth_string,
            "MLFLOW_TRACKING_URI": self.mlflow.url,
            "MLFLOW_TRACKING_USERNAME": MLFLOW_PIPELINE_USER,
            "MLFLOW_TRACKING_PASSWORD": self.secrets.mlflow_pipeline_password,
        }

    def apply_deployments(self) -> None:
        """`python -m fmnist.stack.deployments apply` against this stack (logs/deployments.log)."""
        from fmnist.stack.deployments import apply_in_subprocess

        log_path = self.supervisor.log_dir / "deployments.log"
        env = dict(os.environ) | self.client_env() | {"TF_CPP_MIN_LOG_LEVEL": "2"}
        print(apply_in_subprocess(env, log_path, venv_bin() / "python"))

    # -- down, status ----------------------------------------------------------------------

    def down(self) -> None:
        """Stop workers, then the servers, then PostgreSQL, then supervisord itself."""
        if not self.supervisor.running():
            return
        names = self.program_names
        for name in reversed(names):  # workers first, PostgreSQL last
            self.supervisor.stop_program(name)
        self.supervisor.shutdown()

    def status(self) -> bool:
        """Print each program's state, pid and health; True if all run and answer."""
        up = self.supervisor.running()
        services: list[Any] = []
        if up:
            front = [self.proxy] if self.proxy else []
            services = [
                self.postgres,
                self.prefect,
                self.mlflow,
                *front,
                *self.workers,
                self.serving,
            ]
        all_ok = up
        for name in self.program_names:
            service = next((s for s in services if s.name == name), None)
            state = self.supervisor.state(name) if up else "STOPPED"
            pid = self.supervisor.program_pid(name) if up else None
            if state == RUNNING and service is not None:
                state = "healthy" if service.healthy() else "unhealthy"
            all_ok &= state == "healthy"
            where = service.address if service is not None else ""
            print(f"{name:<15} {state.lower():<10} pid {pid or '-':<8} {where}")
        print(f"state folder: {self.state_dir} (logs in logs/)", flush=True)
        return all_ok


def up(
    state_dir: Path | None = None,
    ports: Ports | None = None,
    *,
    deployments: bool = True,
    durable: bool = True,
    mlflow_workers: int = 2,
    timeout: float = START_TIMEOUT,
) -> Stack:
    """Start the whole stack (idempotent: what runs and answers is left alone)."""
    stack = Stack(state_dir, ports, durable=durable, mlflow_workers=mlflow_workers)
    stack.up(deployments=deployments, timeout=timeout)
    return stack


def down(state_dir: Path | None = None) -> None:
    """Stop the whole stack of a state folder; nothing of it is left running."""
    Stack(state_dir).down()


def status(state_dir: Path | None = None) -> bool:
    """Print the stack's state; True if every service runs and answers."""
    return Stack(state_dir).status()
