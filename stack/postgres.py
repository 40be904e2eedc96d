"""PostgreSQL for the stack: initdb with password authentication, one role per database.

The cluster lives in <state>/postgres, listens on 127.0.0.1 only (and a unix socket in its
own 0700 folder), and authenticates every connection with scram-sha-256. The superuser
`postgres` (its password in the secrets) only creates roles and databases; Prefect and MLflow
connect as roles `prefect` and `mlflow`, each owning its database, neither a superuser, and
neither allowed into the other's database. supervisord runs the server (program `postgres`).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from fmnist.stack import HOST, StackError
from fmnist.stack.secrets import Secrets
from fmnist.stack.supervisor import Program
from fmnist.stack.users import unsearchable_ancestor

SUPERUSER = "postgres"
DATABASES = ("prefect", "mlflow")  # each owned by the role of the same name


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


def pg_identity() -> tuple[int, int] | None:
    """(uid, gid) of the `postgres` user when we are root (PostgreSQL refuses root), else None."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(SUPERUSER)
    except KeyError:
        raise StackError(
            f"PostgreSQL refuses to run as root and there is no {SUPERUSER!r} user: "
            "apt-get install postgresql creates it"
        ) from None
    return entry.pw_uid, entry.pw_gid


def postgres_missing() -> str | None:
    """Why PostgreSQL cannot run here (no binaries, root without a postgres user), else None."""
    if find_pg_bin() is None:
        return "PostgreSQL server binaries not found: apt-get install postgresql"
    try:
        pg_identity()
    except StackError as exc:
        return str(exc)
    return None


class Postgres:
    """The cluster of one state folder: initdb, its supervisord program, roles and databases.

    durable=False turns off fsync for tests: a crash would lose the data, which tests throw
    away anyway, and the Prefect/MLflow migrations run several times faster.
    """

    name = "postgres"

    def __init__(self, state_dir: Path, port: int, secrets: Secrets, *, durable: bool = True):
        self.state_dir = Path(state_dir).resolve()
        self.port = port
        self.secrets = secrets
        self.durable = durable
        self.data_dir = self.state_dir / "postgres"
        found = find_pg_bin()
        if found is None:
            raise StackError("PostgreSQL server binaries not found: apt-get install postgresql")
        self.bin_dir = found
        self.identity = pg_identity()

    @property
    def address(self) -> str:
        """Where it listens."""
        return f"{HOST}:{self.port}"

    def password(self, role: str) -> str:
        """A role's password."""
        return {
            SUPERUSER: self.secrets.pg_admin_password,
            "prefect": self.secrets.pg_prefect_password,
            "mlflow": self.secrets.pg_mlflow_password,
        }[role]

    def url(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        """SQLAlchemy URL of a database as its own role (password included: pass it by
        environment, never on a command line)."""
        return f"{driver}://{database}:{self.password(database)}@{HOST}:{self.port}/{database}"

    # -- initdb ---------------------------------------------------------------------------

    def initialized(self) -> bool:
        """Whether initdb has run in the data folder."""
        return (self.data_dir / "PG_VERSION").exists()

    def _as_owner(self) -> dict[str, Any]:
        if self.identity is None:
            return {"cwd": self.data_dir}
        uid, gid = self.identity
        return {"cwd": "/", "user": uid, "group": gid, "extra_groups": []}

    def initdb(self) -> None:
        """Create the cluster (scram-sha-256 for every connection) unless it exists."""
        if self.initialized():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.identity is not None:
            uid, gid = self.identity
            if (blocked := unsearchable_ancestor(self.data_dir.parent, uid, gid)) is not None:
                raise StackError(
                    f"PostgreSQL runs as {SUPERUSER!r} (you are root), which cannot enter "
                    f"{blocked}; pick a state folder it can reach, e.g. "
                    "FMNIST_STACK_DIR=/var/tmp/fmnist-stack"
                )
            os.chown(self.data_dir, uid, gid)
        os.chmod(self.data_dir, 0o700)
        # The superuser's password through a file only its owner reads, removed at once.
        with tempfile.NamedTemporaryFile("w", prefix="pwfile-", dir=self.state_dir) as pwfile:
            pwfile.write(self.secrets.pg_admin_password + "\n")
            pwfile.flush()
            if self.identity is not None:
                os.chown(pwfile.name, *self.identity)
            argv = [
                str(self.bin_dir / "initdb"),
                "--pgdata",
                str(self.data_dir),
                "--username",
                SUPERUSER,
                "--pwfile",
                pwfile.name,
                "--auth",
                "scram-sha-256",  # host and local lines alike: no trust, no peer
                "--encoding",
                "UTF8",
                "--no-locale",  # the C locale: never depends on the machine's installed locales
                "--no-instructions",
            ]
            if not self.durable:
                argv.append("--no-sync")
            result = subprocess.run(
                argv, capture_output=True, text=True, timeout=300, check=False, **self._as_owner()
            )
        log = self.state_dir / "logs" / "initdb.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(result.stdout + result.stderr)
        if result.returncode != 0:
            shutil.rmtree(self.data_dir, ignore_errors=True)  # a half-made cluster: try afresh
            raise StackError(f"initdb failed ({result.returncode}):\n{result.stderr.strip()}")

    def program(self) -> Program:
        """The supervisord program that runs the server."""
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
            "-c",
            "password_encryption=scram-sha-256",
        ]
        if not self.durable:
            for setting in ("fsync=off", "synchronous_commit=off", "full_page_writes=off"):
                argv += ["-c", setting]
        return Program(
            name=self.name,
            command=argv,
            environment={"LC_ALL": "C"},
            user=SUPERUSER if self.identity is not None else None,
            directory="/" if self.identity is not None else str(self.data_dir),
            stopsignal="INT",  # PostgreSQL's fast shutdown: clean, without waiting for clients
            stopwaitsecs=60,
        )

    # -- connections, roles, databases -------------------------------------------------------

    def connect(self, database: str = "postgres", role: str = SUPERUSER) -> Any:
        """A psycopg2 connection (autocommit) over TCP with the role's password."""
        import psycopg2

        conn = psycopg2.connect(
            host=HOST,
            port=self.port,
            user=role,
            password=self.password(role),
            dbname=database,
            connect_timeout=5,
        )
        conn.autocommit = True
        return conn

    def healthy(self) -> bool:
        """Whether the superuser can log in and run a query."""
        try:
            with contextlib.closing(self.connect()) as conn, conn.cursor() as cur:
                cur.execute("SELECT 1")
                return cur.fetchone() == (1,)
        except Exception:  # any connection error means "not yet"
            return False

    def create_roles_and_databases(self) -> None:
        """Roles prefect and mlflow (login, no other rights) owning their databases; passwords
        set again on every start, so a changed secret takes effect."""
        from psycopg2 import sql
        from psycopg2.extensions import encrypt_password

        with contextlib.closing(self.connect()) as conn, conn.cursor() as cur:
            for name in DATABASES:
                role = sql.Identifier(name)
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
                verb = "ALTER" if cur.fetchone() else "CREATE"
                # The SCRAM verifier, computed here: the password itself never reaches the
                # server, so no statement log could ever show it.
                verifier = encrypt_password(self.password(name), name, conn, "scram-sha-256")
                cur.execute(
                    sql.SQL(
                        "{} ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
                        "PASSWORD {}"
                    ).format(sql.SQL(verb), role, sql.Literal(verifier))
                )
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(role, role))
                # Only its owner (and the superuser) may connect to each database.
                cur.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(role))
            cur.execute("REVOKE ALL ON DATABASE postgres FROM PUBLIC")
