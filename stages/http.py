"""HTTP transfers of the download stage: a file fetched with retries and backoff, bounded per
read, per file and for the whole download, with a progress bar.

Plain standard library (urllib) and rich; nothing here knows the dataset.
"""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

log = logging.getLogger("fmnist.stages.download")  # one logger for the whole download stage

ProgressFactory = Callable[[str, int | None], "TransferProgress"]
"""Given (description, total bytes or None), returns a context manager with advance_bytes(n)."""


class TransferProgress(Protocol):
    """What a progress factory returns: used as a context manager around one transfer."""

    def __enter__(self) -> TransferProgress: ...
    def __exit__(self, *exc: object) -> None: ...
    def advance_bytes(self, n: int) -> None: ...


@dataclass(frozen=True)
class FetchOptions:
    """How hard to try over HTTP, and where to report transfer progress."""

    timeout: float = 60.0
    retries: int = 3
    backoff: float = 1.0
    progress: ProgressFactory | None = None
    deadline: float | None = None  # total seconds for one file from one source, retries included
    until: float | None = None  # wall-clock time (time.time()) by which the whole download ends


class DeadlineExceeded(TimeoutError):
    """A file did not arrive within its total deadline (a stalled or trickling mirror)."""


def http_get(url: str, dest: Path, opts: FetchOptions) -> None:
    """GET url into dest, retrying HTTP 5xx/429 and network errors with exponential backoff.

    opts.timeout bounds each read; opts.deadline bounds the whole file, retries included, so
    a mirror that trickles a byte a second fails after the deadline (plus at most one read).
    """
    progress, retries = opts.progress, opts.retries
    started = time.monotonic()

    def file_left() -> float:
        return opts.deadline - (time.monotonic() - started) if opts.deadline else float("inf")

    def total_left() -> float:
        return opts.until - time.time() if opts.until is not None else float("inf")

    def left() -> float:
        return min(file_left(), total_left())

    def overdue(received: int, size: int | None) -> DeadlineExceeded:
        of = f" of {size:,}" if size is not None else ""
        which = (  # the bound that ends first
            f"the {opts.deadline:g} s deadline (data.http_deadline_s)"
            if file_left() <= total_left()
            else "the download's deadline (data.download_deadline_s)"
        )
        return DeadlineExceeded(
            f"{url}: not complete within {which}; {received:,}{of} bytes received"
        )

    for attempt in range(retries + 1):
        received, size = 0, None
        try:
            if left() <= 0:
                raise overdue(received, size)
            timeout = min(opts.timeout, left())
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(dest, "wb") as out:
                total = resp.headers.get("Content-Length")
                size = int(total) if total else None
                bar = progress(url.rsplit("/", 1)[-1], size) if progress else nullcontext()
                with bar:
                    # read1, not read: read(n) waits for all n bytes, so a trickle of one
                    # byte a second would never trip the per-read timeout nor the deadline.
                    while block := resp.read1(1 << 16):
                        out.write(block)
                        received += len(block)
                        if progress:
                            bar.advance_bytes(len(block))
                        if left() <= 0:
                            raise overdue(received, size)
                if size is not None and received != size:
                    # A dropped connection can end the body early without an exception.
                    raise urllib.error.URLError(f"short read: {received} of {size} bytes")
            return
        except DeadlineExceeded:
            raise  # the deadline covers the retries: asking again would overrun it
        except urllib.error.HTTPError as exc:
            # A 404 will not get better by asking again; server errors and throttling may.
            if (exc.code < 500 and exc.code != 429) or attempt == retries:
                raise
            reason = f"HTTP {exc.code}"
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            if attempt == retries:
                raise
            reason = str(exc)
        delay = opts.backoff * 2**attempt
        if delay >= left():
            raise overdue(received, size)
        log.warning("%s: %s; retry %d/%d in %.1fs", url, reason, attempt + 1, retries, delay)
        time.sleep(delay)


def rich_progress(report: Callable[[str], None] | None = None) -> ProgressFactory:
    """A progress factory: one rich bar per HTTP transfer, plus a line to `report` each 25%.

    The bar is for a person at a terminal; the report lines are for logs (Prefect's flow
    logs), which cannot show a bar.
    """
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    def factory(description: str, total: int | None) -> Progress:
        bar = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        )
        task = bar.add_task(description, total=total)
        state = {"done": 0, "next": 0.25}

        def advance(n: int) -> None:
            bar.advance(task, n)
            state["done"] += n
            if report and total and state["done"] / total >= state["next"]:
                report(f"{description}: {state['done'] / total:.0%} of {total:,} bytes")
                state["next"] += 0.25

        bar.advance_bytes = advance  # type: ignore[attr-defined]
        return bar

    return factory
