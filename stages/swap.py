"""Following a model that moves (models:/NAME@champion) without a failed request.

The Swapper holds the backend that answers now. Each `follow()` asks where the model points;
when that changed (or the backend died) it starts a backend for the new target, checks that
it answers a real prediction, and only then switches to it; requests already on the old one
finish there before it is stopped. A target whose backend does not come up is not switched
to: the old one goes on serving, and that target is tried again after `retry_after_s`.

Plain code: how a target is found, started and checked is passed in (flows/serve.py uses
the MLflow registry and MLflow's scoring server).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Target:
    """A model to serve: its pinned URI (models:/NAME/VERSION) and the version it shows."""

    uri: str
    version: str
    name: str = ""


class Backend(Protocol):
    """A server answering for one target."""

    target: Target
    url: str

    def alive(self) -> bool:
        """Whether it is still running."""
        ...

    def stop(self) -> None:
        """Stop it and free what it holds."""
        ...


@dataclass
class _Slot:
    backend: Backend
    inflight: int = 0
    since: float = field(default_factory=time.time)


class Swapper:
    """The backend in use, switched atomically to a checked new one when the target moves."""

    def __init__(
        self,
        resolve: Callable[[], Target | None],
        launch: Callable[[Target], Backend],
        check: Callable[[Backend], None],
        *,
        drain_timeout_s: float = 60.0,
        retry_after_s: float = 600.0,
        log: Callable[[str], None] = print,
    ) -> None:
        self._resolve, self._launch, self._check = resolve, launch, check
        self.drain_timeout_s, self.retry_after_s = drain_timeout_s, retry_after_s
        self._log = log
        self._cond = threading.Condition()
        self._slot: _Slot | None = None
        self._failed: dict[Target, float] = {}  # target -> when its backend failed
        self._follow = threading.Lock()  # one follow() at a time

    @property
    def target(self) -> Target | None:
        """What answers now (None before the first backend is up)."""
        slot = self._slot
        return slot.backend.target if slot else None

    @property
    def since(self) -> float | None:
        """When the backend in use started answering (epoch seconds)."""
        slot = self._slot
        return slot.since if slot else None

    @contextmanager
    def serving(self) -> Iterator[Backend | None]:
        """The backend to send one request to; it is not stopped before the block ends."""
        with self._cond:
            slot = self._slot
            if slot is not None:
                slot.inflight += 1
        try:
            yield slot.backend if slot else None
        finally:
            if slot is not None:
                with self._cond:
                    slot.inflight -= 1
                    self._cond.notify_all()

    def follow(self) -> str:
        """Look where the model points once; switch to it if it moved. Returns what happened.

        An error finding the target (registry away) keeps the current backend serving.
        """
        with self._follow:
            try:
                target = self._resolve()
            except Exception as exc:  # the registry is away: keep serving what we have
                return self._report(f"cannot resolve the model ({exc}); {self._keeping()}")
            if target is None:
                return self._report(f"the model is not there; {self._keeping()}")
            slot = self._slot
            if slot is not None and slot.backend.target == target:
                if slot.backend.alive():
                    return "unchanged"
                self._log(f"version {target.version}: its server died; starting another")
            elif self._recently_failed(target):
                return f"version {target.version} failed recently; {self._keeping()}"
            return self._switch_to(target)

    def _switch_to(self, target: Target) -> str:
        self._log(f"starting version {target.version} ({target.uri})")
        backend = None
        try:
            backend = self._launch(target)
            self._check(backend)
        except Exception as exc:
            if backend is not None:
                backend.stop()
            self._failed[target] = time.monotonic()
            return self._report(
                f"version {target.version} did not start ({exc}); {self._keeping()}"
            )
        with self._cond:  # from here on new requests go to the new backend
            old, self._slot = self._slot, _Slot(backend)
        self._failed.pop(target, None)
        if old is not None:
            self._retire(old)
        return self._report(f"now serving version {target.version}")

    def _retire(self, slot: _Slot) -> None:
        # Requests that got the old backend before the switch finish on it.
        deadline = time.monotonic() + self.drain_timeout_s
        with self._cond:
            while slot.inflight > 0 and time.monotonic() < deadline:
                self._cond.wait(timeout=max(0.0, deadline - time.monotonic()))
            left = slot.inflight
        if left:
            self._log(f"version {slot.backend.target.version}: {left} requests cut off")
        slot.backend.stop()

    def _recently_failed(self, target: Target) -> bool:
        failed = self._failed.get(target)
        return failed is not None and time.monotonic() - failed < self.retry_after_s

    def _keeping(self) -> str:
        target = self.target
        return f"keeping version {target.version}" if target else "nothing served yet"

    def _report(self, message: str) -> str:
        self._log(message)
        return message

    def run(self, interval_s: float, stop: threading.Event) -> None:
        """follow() every interval_s until stop is set."""
        while not stop.wait(interval_s):
            try:
                self.follow()
            except Exception as exc:  # a bug must not end following for good
                self._log(f"follow failed: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        """Stop the backend in use (after the requests on it finish, within the drain time)."""
        with self._follow:
            with self._cond:
                slot, self._slot = self._slot, None
            if slot is not None:
                self._retire(slot)
