"""Bounded waits on the tracking server, and one clear error when it cannot be reached.

MLflow's HTTP client retries a failed request MLFLOW_HTTP_REQUEST_MAX_RETRIES times (7 by
default) with exponential backoff (factor 2): a dead server keeps a caller silent for about
4 minutes, and the error then says "API request to ... failed with exception ...". MLflow
reads these variables on every request (mlflow/utils/rest_utils.py), so setting them before
the first call is enough; TrackingUnavailable then names the server and the bound.

Precedence: a variable the user set in the environment wins over the profile, as
MLFLOW_TRACKING_URI does; one this module set earlier may be replaced by the next config.
"""

from __future__ import annotations

import functools
import os
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

TIMEOUT = "MLFLOW_HTTP_REQUEST_TIMEOUT"
MAX_RETRIES = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
BACKOFF_FACTOR = "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"
BACKOFF_JITTER = "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER"
# urllib3 caps any single backoff at 120 s (Retry.DEFAULT_BACKOFF_MAX).
BACKOFF_MAX_S = 120.0

_ours: dict[str, str] = {}  # what apply() last wrote, so a later config may replace it


class TrackingUnavailable(ConnectionError):
    """The tracking server could not be reached within the configured bound."""


@dataclass(frozen=True)
class RequestLimits:
    """How long one tracking call may take: per-request timeout, retries, backoff factor."""

    timeout_s: int = 30
    max_retries: int = 5
    backoff_factor: int = 2

    @classmethod
    def of(cls, settings: Any) -> RequestLimits:
        """From the tracking settings (request_timeout_s, max_retries, backoff_factor)."""
        return cls(settings.request_timeout_s, settings.max_retries, settings.backoff_factor)

    def current(self) -> RequestLimits:
        """The limits in force: the environment's values where the user set them."""

        def env(name: str, default: int) -> int:
            value = os.environ.get(name)
            return int(value) if value is not None and _ours.get(name) != value else default

        return RequestLimits(
            env(TIMEOUT, self.timeout_s),
            env(MAX_RETRIES, self.max_retries),
            env(BACKOFF_FACTOR, self.backoff_factor),
        )

    def apply(self) -> RequestLimits:
        """Set MLflow's variables (unless the user set them); return the limits in force."""
        for name, value in (
            (TIMEOUT, self.timeout_s),
            (MAX_RETRIES, self.max_retries),
            (BACKOFF_FACTOR, self.backoff_factor),
        ):
            if name not in os.environ or _ours.get(name) == os.environ[name]:
                os.environ[name] = _ours[name] = str(value)
        return self.current()

    def backoff_s(self) -> float:
        """Total sleep between the retries of one request (urllib3: none before the first)."""
        jitter = float(os.environ.get(BACKOFF_JITTER, "1.0"))
        return sum(
            min(BACKOFF_MAX_S, self.backoff_factor * 2 ** (k - 1) + jitter)
            for k in range(2, self.max_retries + 1)
        )

    def refused_bound_s(self) -> float:
        """Worst case for a call to a host that refuses connections (server down)."""
        return self.backoff_s()

    def bound_s(self) -> float:
        """Worst case for a call to a host that does not answer at all (every try times out)."""
        return self.backoff_s() + (self.max_retries + 1) * self.timeout_s


def _cause_chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def is_unreachable(exc: BaseException) -> bool:
    """True if exc comes from not reaching the server (refused, timed out, retries spent)."""
    import requests
    import urllib3

    kinds = (
        requests.exceptions.ConnectionError,
        requests.exceptions.Timeout,
        requests.exceptions.RetryError,
        urllib3.exceptions.MaxRetryError,
        ConnectionError,
        TimeoutError,
    )
    chain = list(_cause_chain(exc))
    if any(isinstance(e, ssl.SSLError) for e in chain):
        return False  # a certificate we do not trust is a setting to fix, not an outage
    return any(isinstance(e, kinds) for e in chain) or (
        # MLflow turns a timeout into an MlflowException "... failed with timeout exception".
        type(exc).__name__ == "MlflowException" and "timeout exception" in str(exc)
    )


def _summary(exc: BaseException) -> str:
    innermost = list(_cause_chain(exc))[-1]
    return f"{type(innermost).__name__}: {innermost}"


@contextmanager
def reaching(uri: str) -> Iterator[None]:
    """Turn 'server unreachable' errors inside the block into TrackingUnavailable(uri)."""
    try:
        yield
    except TrackingUnavailable:
        raise
    except Exception as exc:
        if not uri.startswith(("http://", "https://")) or not is_unreachable(exc):
            raise
        limits = RequestLimits().current()
        raise TrackingUnavailable(
            f"tracking server {uri} unreachable ({_summary(exc)}); gave up after "
            f"{limits.max_retries} retries (bound {limits.refused_bound_s():.0f} s if refused, "
            f"{limits.bound_s():.0f} s if silent: tracking.request_timeout_s, "
            "tracking.max_retries, tracking.backoff_factor)"
        ) from exc


F = TypeVar("F", bound=Callable[..., Any])


def names_the_server(method: F) -> F:
    """Decorate a Tracker method: unreachable-server errors become TrackingUnavailable."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        with reaching(self.tracking_uri):
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
