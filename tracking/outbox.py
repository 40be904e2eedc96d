"""The outbox: every write to a run goes through here, and waits in the spool while the
tracking server is away.

A write is an operation with JSON arguments (and, for an artifact or a model, a file).
`write` performs it now, or, when the server cannot be reached, appends it to the spool
(tracking/spool.py) behind any the run already has waiting, so the order holds. `flush`
replays a run's kept operations, oldest first, through the same handlers (one per
operation: tracking/replay.py) that `fmnist spool upload` uses.

Training must not wait on a server that is away. Before a write to a server (http/https),
a health check with a short timeout and no retries says whether it answers: if not, the
write goes to the spool at once, instead of spending MLflow's retries (about a minute by
default) in the training thread; a run's spool is then tried again after 10 s, 20 s, ...
(at most 5 minutes), each try costing at most one such check. A run that starts while the
server is away (its creation is a write too) gets a placeholder id: its creation waits in
the spool with its other writes, and the id the server gives it later is recorded, so the
process can go on writing under the placeholder.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmnist.tracking.client import BoundedClient, unreachable
from fmnist.tracking.replay import HANDLERS
from fmnist.tracking.spool import PLACEHOLDER, Spool

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 10.0  # the first wait before a run's spool is tried again
LONGEST_HOLD_S = 300.0  # the longest (the wait doubles at each failed try)
PROBE_TIMEOUT_S = 2.0  # the health check before a write: one request, no retries
CREATE_RUN = "create_run"


class TrackingUntrusted(RuntimeError):
    """The tracking server's TLS certificate does not verify: a setting to fix, never spooled."""


class TrackingSpooled(RuntimeError):
    """A run ended while the tracking server was away: its writes wait in the spool."""


@dataclass(frozen=True)
class Outbox:
    """Writes to the runs of one store; with spool_dir, kept there while it is away."""

    tracking_uri: str
    spool_dir: str | None = None

    @property
    def client(self) -> BoundedClient:
        """A bounded client of this store."""
        return BoundedClient(self.tracking_uri)

    @property
    def spool(self) -> Spool | None:
        """The spool for writes the server could not take, if this outbox keeps one."""
        return Spool(self.spool_dir, self.tracking_uri) if self.spool_dir else None

    def reachable(self) -> bool:
        """Whether the server answers its health check now (a local store always does)."""
        if not self.tracking_uri.startswith(("http://", "https://")):
            return True
        import requests
        from mlflow.utils.credentials import get_default_host_creds

        # Verified as MLflow's own calls are (MLFLOW_TRACKING_SERVER_CERT_PATH: the stack's CA).
        verify = get_default_host_creds(self.tracking_uri).verify
        try:
            url = f"{self.tracking_uri}/health"
            return requests.get(url, timeout=PROBE_TIMEOUT_S, verify=verify).ok
        except requests.exceptions.SSLError as exc:
            raise TrackingUntrusted(
                f"tracking server {self.tracking_uri}: its certificate is not trusted ({exc}); "
                "set MLFLOW_TRACKING_SERVER_CERT_PATH to the CA that signed it"
            ) from exc
        except requests.RequestException:
            return False

    def resolve(self, run_id: str) -> str:
        """The server's id of a run (a run made while it was away has a placeholder)."""
        spool = self.spool
        return spool.resolve(run_id) if spool is not None else run_id

    def write(
        self,
        run_id: str,
        op: str,
        args: dict[str, Any],
        write_file: Callable[[Path], None] | None = None,
        now: Callable[[str], Any] | None = None,
    ) -> bool:
        """Do a write now, or keep it in the spool while the server is away; True if done.

        `now(run_id)` does the write from live objects; without it the write is replayed
        from `args`, exactly as an upload later would.
        """
        spool = self.spool
        if spool is not None:
            if spool.pending(run_id) and not self.flush(run_id):
                spool.append(run_id, op, args, write_file)  # behind the others: order holds
                return False
            if not self.reachable():
                self._keep(run_id, op, args, write_file, "no answer to its health check")
                return False
        target = self.resolve(run_id)
        try:
            if now is not None:
                now(target)
            else:
                self.replay(target, op, args)
            return True
        except Exception as exc:
            if spool is None or not unreachable(exc):
                raise
            self._keep(run_id, op, args, write_file, type(exc).__name__)
            return False

    def _keep(
        self,
        run_id: str,
        op: str,
        args: dict[str, Any],
        write_file: Callable[[Path], None] | None,
        why: str,
    ) -> None:
        spool = self.spool
        assert spool is not None
        spool.append(run_id, op, args, write_file)
        spool.hold(run_id, FLUSH_INTERVAL_S, LONGEST_HOLD_S)
        log.warning(
            "tracking server %s unreachable (%s); %s for run %s kept in %s",
            self.tracking_uri,
            why,
            op,
            run_id,
            spool.folder(run_id),
        )

    def defer_run(self, experiment_id: str, name: str, tags: Mapping[str, str]) -> str:
        """A run the server cannot create now: its creation waits in the spool; return the
        placeholder id to write under meanwhile."""
        spool = self.spool
        if spool is None:
            raise ValueError("a run can only wait for its server with a spool")
        run_id = spool.placeholder()
        args = {
            "experiment_id": experiment_id,
            "run_name": name,
            "tags": dict(tags),
            "start_time": int(time.time() * 1000),
        }
        self._keep(run_id, CREATE_RUN, args, None, "the run is created when it is back")
        return run_id

    def replay(self, run_id: str, op: str, args: dict[str, Any], blob: Path | None = None) -> None:
        """Perform one operation from its spooled form."""
        handler = HANDLERS.get(op)
        if handler is None:
            raise ValueError(f"unknown spooled operation {op!r}")
        handler(self, run_id, args, blob)

    def _create(self, placeholder: str, args: dict[str, Any]) -> None:
        spool = self.spool
        assert spool is not None
        if spool.resolve(placeholder) != placeholder:
            return  # created by an earlier flush that stopped before it was crossed off
        run = self.client.create_run(
            args["experiment_id"],
            start_time=args["start_time"],
            tags=args["tags"],
            run_name=args["run_name"],
        )
        spool.map_id(placeholder, run.info.run_id)
        log.info("run %s created as %s", placeholder, run.info.run_id)

    def flush(self, run_id: str, *, force: bool = False) -> bool:
        """Upload a run's spooled writes, oldest first; True when none is left.

        Not forced, a run's spool on hold is not tried (see the module docstring); either
        way a server that does not answer its health check is not tried either.
        """
        spool = self.spool
        if spool is None or not spool.pending(run_id):
            return True
        if not force and spool.held(run_id):
            return False
        if not self.reachable():
            spool.hold(run_id, FLUSH_INTERVAL_S, LONGEST_HOLD_S)
            return False
        done = 0
        try:
            for entry in spool.ops(run_id):
                args = entry["args"]
                if entry["op"] == CREATE_RUN:
                    self._create(run_id, args)
                else:
                    blob = spool.blob(run_id, args["blob"]) if "blob" in args else None
                    self.replay(self.resolve(run_id), entry["op"], args, blob)
                done += 1
        except Exception as exc:
            if not unreachable(exc):
                raise
            spool.hold(run_id, FLUSH_INTERVAL_S, LONGEST_HOLD_S)
            return False
        finally:
            spool.done(run_id, done)
        log.info("run %s: %d spooled writes uploaded to %s", run_id, done, self.tracking_uri)
        return True

    def flush_all(self) -> list[str]:
        """Upload the spooled writes of every run of this store that the server takes now;
        return the runs left (a refusal is logged, not raised: the spool keeps them)."""
        spool = self.spool
        if spool is None:
            return []
        left = []
        for run_id in spool.runs():
            if spool.store_of(run_id) != self.tracking_uri:
                continue  # another store's, or of unknown origin: `fmnist spool upload`
            try:
                if not self.flush(run_id, force=True):
                    left.append(run_id)
            except Exception as exc:  # refused: say so, keep it for a look by hand
                log.warning("run %s: spooled writes refused: %s", run_id, exc)
                left.append(run_id)
        return left

    def raise_if_spooled(self, run_id: str, cause: BaseException | None = None) -> None:
        """After a run ends: TrackingSpooled if some of its writes could not be uploaded."""
        spool = self.spool
        if spool is None or self.flush(run_id, force=True):
            return
        made = " (not yet created there)" if run_id.startswith(PLACEHOLDER) else ""
        raise TrackingSpooled(
            f"tracking server {self.tracking_uri} unreachable: {spool.pending(run_id)} writes "
            f"of run {run_id}{made} are kept in {spool.folder(run_id)}; upload them with "
            f"`fmnist spool upload --spool {spool.root}` once the server is back"
        ) from cause
