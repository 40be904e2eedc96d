"""Off loopback only behind TLS: Debian's nginx in front of the Prefect and MLflow servers.

The servers always listen on 127.0.0.1. With FMNIST_PUBLIC_ADDRESS set (an address of this
machine that other machines reach), `stack-up` also starts `nginx` (its own supervisord
program, as the proxy user) listening there on two TLS ports, FMNIST_PREFECT_TLS_PORT (4443)
and FMNIST_MLFLOW_TLS_PORT (5443), with a server certificate for FMNIST_PUBLIC_NAMES (default:
the address) signed by the stack's own CA (stack/tls.py). Plain HTTP off loopback is refused:
basic auth and Prefect's auth string would cross the network in clear (FMNIST_TLS=off with a
public address stops `stack-up`).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import ssl
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from fmnist.stack import HOST, StackError
from fmnist.stack.supervisor import Program
from fmnist.stack.tls import TlsFiles, ensure_certificates
from fmnist.stack.users import ServiceUser, owned_dir

ADDRESS_ENV, NAMES_ENV, TLS_ENV = "FMNIST_PUBLIC_ADDRESS", "FMNIST_PUBLIC_NAMES", "FMNIST_TLS"
PREFECT_TLS_ENV, MLFLOW_TLS_ENV = "FMNIST_PREFECT_TLS_PORT", "FMNIST_MLFLOW_TLS_PORT"


def loopback(address: str) -> bool:
    """Whether an address only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Public:
    """Where other machines reach the stack: an address, the names in its certificate, and
    the TLS ports of the Prefect and MLflow fronts."""

    address: str
    names: tuple[str, ...] = ()
    prefect_port: int = 4443
    mlflow_port: int = 5443
    tls: bool = True

    def __post_init__(self) -> None:
        # The address is always in the certificate: health checks and workers without DNS
        # reach the fronts by it.
        if self.address not in self.names:
            object.__setattr__(self, "names", (*self.names, self.address))

    @classmethod
    def from_env(cls) -> Public | None:
        """FMNIST_PUBLIC_ADDRESS and friends; None when it is unset (loopback only)."""
        address = os.environ.get(ADDRESS_ENV, "").strip()
        tls = os.environ.get(TLS_ENV, "on").lower() not in ("off", "0", "false", "no")
        if not address or (loopback(address) and not tls):
            return None  # loopback only: the servers' own plain HTTP on 127.0.0.1
        names = tuple(n.strip() for n in os.environ.get(NAMES_ENV, "").split(",") if n.strip())
        return cls(
            address,
            names,
            int(os.environ.get(PREFECT_TLS_ENV, 4443)),
            int(os.environ.get(MLFLOW_TLS_ENV, 5443)),
            tls=tls,
        )

    def check(self) -> None:
        """Refuse plain HTTP on an address other machines reach."""
        if not self.tls and not loopback(self.address):
            raise StackError(
                f"refusing plain HTTP on {self.address}: MLflow's basic auth and Prefect's "
                f"auth string would cross the network in clear. Leave {TLS_ENV} unset (the "
                f"stack then serves {self.address} through TLS, with a CA of its own) or "
                f"listen on 127.0.0.1 only (unset {ADDRESS_ENV})"
            )

    @property
    def prefect_url(self) -> str:
        """The dashboard as other machines reach it."""
        return f"https://{_host(self.names[0])}:{self.prefect_port}"

    @property
    def mlflow_url(self) -> str:
        """The MLflow tracking URI other machines use."""
        return f"https://{_host(self.names[0])}:{self.mlflow_port}"

    def origins(self, port: int) -> list[str]:
        """Every browser origin of a front (each name in the certificate)."""
        return [f"https://{_host(name)}:{port}" for name in self.names]


def _host(name: str) -> str:
    return f"[{name}]" if ":" in name else name  # an IPv6 address in a URL


def nginx_binary() -> str | None:
    """Debian's nginx (apt-get install nginx), None when missing."""
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None
    )


@dataclass
class Proxy:
    """nginx: TLS on the public address, plain HTTP to the servers on loopback."""

    state_dir: Path
    public: Public
    prefect_port: int
    mlflow_port: int
    name: str = "proxy"
    files: TlsFiles | None = field(default=None, init=False)

    @property
    def home(self) -> Path:
        """nginx's folder: its config, the server key (0600), temp files, pid."""
        return Path(self.state_dir).resolve() / "proxy"

    @property
    def address(self) -> str:
        """For `status`."""
        return f"{self.public.prefect_url} {self.public.mlflow_url}"

    @property
    def ca_file(self) -> Path:
        """The CA's certificate: what workers verify the servers with."""
        return Path(self.state_dir).resolve() / "tls" / "ca.pem"

    def config(self, cert: Path, key: Path) -> str:
        """nginx.conf: two TLS servers, each proxying one backend (websockets included)."""
        home, addr = self.home, _host(self.public.address)
        temp = "\n".join(
            f"  {kind}_temp_path {home}/tmp/{kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        servers = ""
        for front, backend in (
            (self.public.prefect_port, self.prefect_port),
            (self.public.mlflow_port, self.mlflow_port),
        ):
            servers += f"""
  server {{
    listen {addr}:{front} ssl;
    location / {{
      proxy_pass http://{HOST}:{backend};
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header X-Forwarded-Proto https;
      proxy_set_header X-Forwarded-For $remote_addr;
    }}
  }}
"""
        return f"""# Written by `make stack-up` (stack/proxy.py); rewritten on every start.
daemon off;
worker_processes 1;
pid {home}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 512; }}
http {{
  access_log off;
{temp}
  client_max_body_size 0;        # models and datasets go through MLflow's artifact proxy
  proxy_request_buffering off;
  proxy_buffering off;
  proxy_read_timeout 600s;
  proxy_send_timeout 600s;
  server_tokens off;
  map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_certificate {cert};
  ssl_certificate_key {key};
{servers}}}
"""

    def program(self, user: ServiceUser | None) -> Program:
        """The supervisord program; the certificates made or renewed first."""
        nginx = nginx_binary()
        if nginx is None:
            raise StackError(
                f"{ADDRESS_ENV} is set, so the stack serves it through nginx with TLS, but "
                "nginx is not installed: apt-get install nginx"
            )
        self.files = ensure_certificates(self.ca_file.parent, list(self.public.names))
        home = owned_dir(self.home, user, recursive=True)
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            owned_dir(home / "tmp" / kind, user)
        key = home / "server.key"  # a copy the proxy user alone reads
        key.unlink(missing_ok=True)
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            if user is not None:
                os.fchown(out.fileno(), user.uid, user.gid)
            out.write(self.files.server_key.read_bytes())
        conf = home / "nginx.conf"
        conf.write_text(self.config(self.files.server_cert, key))
        argv = [nginx, "-e", "stderr", "-p", str(home), "-c", str(conf)]
        return Program(
            self.name, argv, {"HOME": str(home)}, user=user and user.name, directory=str(home)
        )

    def healthy(self) -> bool:
        """Both fronts answer their backend's health check over TLS, verified with our CA."""
        try:
            context = ssl.create_default_context(cafile=str(self.ca_file))
        except OSError:
            return False
        # By the address (always in the certificate): a DNS name may not resolve here.
        base = f"https://{_host(self.public.address)}"
        for url in (
            f"{base}:{self.public.prefect_port}/api/health",
            f"{base}:{self.public.mlflow_port}/health",
        ):
            try:
                with urllib.request.urlopen(url, timeout=10, context=context) as response:
                    if response.status != 200:
                        return False
            except OSError:
                return False
        return True
