"""Download: source order, digest checks, atomic cache, HTTP retries, clear errors."""

from __future__ import annotations

import io
import re
import socket
from pathlib import Path

import numpy as np
import pytest

from fmnist.stages import http
from fmnist.stages.digest import sha256_file
from fmnist.stages.download import (
    FILES,
    DigestMismatch,
    DownloadError,
    FetchOptions,
    IdxFile,
    OutOfTime,
    dataset_digest,
    fetch_all,
    fetch_file,
    rich_progress,
    verify,
)
from fmnist.stages.load import LABELS_MAGIC
from tests.helpers import gz, idx_bytes, sha256

LOGGER = fetch_all.__module__  # the module's logger: its __name__ (make mutate renames it)
# The HTTP helpers log as the download stage, under a name of their own choosing (the same
# as LOGGER except under make mutate).
HTTP_LOGGER = http.log.name

# dataset_digest() of the four pinned files (see test_dataset_digest_is_stable).
DATASET_DIGEST = "ff46814726d6bdb59ea3a42128562c524ee37bc733a64fc5795ec41930e27811"
PAYLOAD = idx_bytes(np.arange(200, dtype=np.uint8) % 10, LABELS_MAGIC)
SPEC = IdxFile("tiny-labels-idx1-ubyte", sha256(PAYLOAD), len(PAYLOAD))


def dead_pid() -> str:
    """The pid of a process that has already ended (a child that printed it and exited)."""
    import subprocess
    import sys

    code = "import os; print(os.getpid())"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


def fetch(sources, cache: Path, **kw):
    kw.setdefault("backoff", 0.0)
    return fetch_file(SPEC, [str(s) for s in sources], cache, FetchOptions(**kw))


def no_partials(cache: Path) -> bool:
    return not [p for p in cache.iterdir() if p.name.startswith(".partial")]


def test_local_gz_is_decompressed_verified_and_cached(tmp_path):
    src = tmp_path / "mirror"
    src.mkdir()
    (src / f"{SPEC.name}.gz").write_bytes(gz(PAYLOAD))
    path, origin = fetch([src], tmp_path / "cache")
    assert path.read_bytes() == PAYLOAD
    assert origin == str(src / f"{SPEC.name}.gz")
    # A second call serves the verified cached copy without touching the sources.
    (src / f"{SPEC.name}.gz").unlink()
    path2, origin2 = fetch([src], tmp_path / "cache")
    assert (path2, origin2) == (path, "cache")


def test_plain_uncompressed_file_is_accepted(tmp_path):
    src = tmp_path / "mirror"
    src.mkdir()
    (src / SPEC.name).write_bytes(PAYLOAD)
    path, _ = fetch([src], tmp_path / "cache")
    assert sha256_file(path) == SPEC.sha256


def test_wrong_file_falls_back_to_the_next_source(tmp_path):
    bad, good = tmp_path / "bad", tmp_path / "good"
    bad.mkdir(), good.mkdir()
    (bad / f"{SPEC.name}.gz").write_bytes(gz(PAYLOAD[:-1] + b"\x07"))
    (good / f"{SPEC.name}.gz").write_bytes(gz(PAYLOAD))
    path, origin = fetch([tmp_path / "missing", bad, good], tmp_path / "cache")
    assert origin.startswith(str(good))
    assert path.read_bytes() == PAYLOAD


def test_all_sources_bad_names_file_expected_and_actual_digest(tmp_path):
    wrong, truncated = tmp_path / "wrong", tmp_path / "truncated"
    wrong.mkdir(), truncated.mkdir()
    wrong_payload = PAYLOAD[:-1] + b"\x07"
    (wrong / f"{SPEC.name}.gz").write_bytes(gz(wrong_payload))
    (truncated / f"{SPEC.name}.gz").write_bytes(gz(PAYLOAD)[:-12])
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError) as info:
        fetch([tmp_path / "missing", wrong, truncated], cache)
    message = str(info.value)
    assert SPEC.name in message
    assert f"expected sha256 {SPEC.sha256}" in message
    assert sha256(wrong_payload) in message  # the actual digest of the wrong file
    assert "truncated" in message
    assert str(tmp_path / "missing") in message
    # Nothing partial or wrong is left in the cache.
    assert not (cache / SPEC.name).exists()
    assert no_partials(cache)


def test_corrupted_cache_entry_is_fetched_again(tmp_path):
    src = tmp_path / "mirror"
    src.mkdir()
    (src / f"{SPEC.name}.gz").write_bytes(gz(PAYLOAD))
    cache = tmp_path / "cache"
    path, _ = fetch([src], cache)
    path.write_bytes(b"garbage")
    path, origin = fetch([src], cache)
    assert origin != "cache"
    assert path.read_bytes() == PAYLOAD


def test_fetch_all_reports_every_missing_file(tmp_path):
    with pytest.raises(DownloadError) as info:
        fetch_all([str(tmp_path / "empty")], tmp_path / "cache")
    for spec in FILES.values():
        assert spec.name in str(info.value)
        assert spec.sha256 in str(info.value)
    # One file's failure per line, each its own message, in the pinned order.
    lines = str(info.value).splitlines()
    per_file = [i for i, line in enumerate(lines) if line.startswith("no valid copy of")]
    assert [lines[i].split()[4] for i in per_file] == list(FILES)


@pytest.mark.http
def test_fetch_all_uses_the_options_it_is_given(tmp_path, http_server, copy_debian):
    # One 503 per file: with retries=0 (not the default 3) each file fails at once.
    copy_debian(http_server.root)
    for name in FILES:
        http_server.fail(f"/{name}.gz", 503)
    with pytest.raises(DownloadError, match="503"):
        fetch_all([http_server.url], tmp_path / "cache", FetchOptions(retries=0, backoff=0.0))
    assert len(http_server.requests) == len(FILES)


# -- HTTP, from a real server on 127.0.0.1 -------------------------------------------------


@pytest.mark.http
def test_http_download_with_progress(tmp_path, http_server):
    (http_server.root / f"{SPEC.name}.gz").write_bytes(gz(PAYLOAD))
    seen: list[tuple[str, int | None, int]] = []

    class Bar:
        def __init__(self, desc, total):
            self.desc, self.total, self.done = desc, total, 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            seen.append((self.desc, self.total, self.done))

        def advance_bytes(self, n):
            self.done += n

    path, origin = fetch([http_server.url], tmp_path / "cache", progress=Bar)
    assert origin == f"{http_server.url}/{SPEC.name}.gz"
    assert path.read_bytes() == PAYLOAD
    assert seen == [(f"{SPEC.name}.gz", len(gz(PAYLOAD)), len(gz(PAYLOAD)))]


@pytest.mark.http
def test_http_server_errors_are_retried(tmp_path, http_server):
    (http_server.root / f"{SPEC.name}.gz").write_bytes(gz(PAYLOAD))
    http_server.fail(f"/{SPEC.name}.gz", 503, 500)
    path, _ = fetch([http_server.url], tmp_path / "cache", retries=2)
    assert path.read_bytes() == PAYLOAD
    assert http_server.requests.count(f"/{SPEC.name}.gz") == 3


@pytest.mark.http
def test_http_gives_up_after_retries_and_tries_next_source(tmp_path, http_server):
    local = tmp_path / "local"
    local.mkdir()
    (local / f"{SPEC.name}.gz").write_bytes(gz(PAYLOAD))
    http_server.fail(f"/{SPEC.name}.gz", 503, 503, 503)
    _, origin = fetch([http_server.url, local], tmp_path / "cache", retries=1)
    assert http_server.requests.count(f"/{SPEC.name}.gz") == 2
    assert origin.startswith(str(local))


@pytest.mark.http
def test_http_404_is_not_retried(tmp_path, http_server):
    with pytest.raises(DownloadError, match="404"):
        fetch([http_server.url], tmp_path / "cache", retries=3)
    assert len(http_server.requests) == 1


@pytest.mark.http
def test_http_truncated_file_is_an_error(tmp_path, http_server):
    (http_server.root / f"{SPEC.name}.gz").write_bytes(gz(PAYLOAD)[:-20])
    with pytest.raises(DownloadError, match="truncated"):
        fetch([http_server.url], tmp_path / "cache")
    assert no_partials(tmp_path / "cache")


@pytest.mark.http
def test_all_four_real_files_over_http(tmp_path, http_server, copy_debian):
    copy_debian(http_server.root)
    paths = fetch_all([http_server.url], tmp_path / "cache", FetchOptions(backoff=0.0))
    assert sorted(paths) == sorted(FILES)
    for name, path in paths.items():
        assert sha256_file(path) == FILES[name].sha256
        assert path.stat().st_size == FILES[name].size


@pytest.mark.http
def test_a_trickling_mirror_fails_at_the_deadline_and_leaves_nothing(tmp_path, trickle_server):
    """One byte every 50 ms never trips the per-read timeout; the total deadline stops it."""
    import time

    (tmp_path / "slow" / f"{SPEC.name}.gz").write_bytes(gz(PAYLOAD) * 50)
    cache = tmp_path / "cache"
    t0 = time.monotonic()
    with pytest.raises(DownloadError) as info:
        fetch([trickle_server.url], cache, timeout=5.0, deadline=1.0, retries=3)
    elapsed = time.monotonic() - t0
    assert elapsed < 1.0 + 2.0, elapsed  # the deadline, plus a read, plus slack
    assert "not complete within the 1 s deadline (data.http_deadline_s)" in str(info.value)
    assert SPEC.name in str(info.value)
    # How far it got, out of the length the server announced.
    size = len(gz(PAYLOAD) * 50)
    assert re.search(rf"; [1-9][\d,]* of {size:,} bytes received", str(info.value))
    assert no_partials(cache) and not (cache / SPEC.name).exists()


def test_a_keyboard_interrupt_mid_download_leaves_no_partial_files(tmp_path, monkeypatch):
    import fmnist.stages.download as dl

    src = tmp_path / "mirror"
    src.mkdir()
    (src / f"{SPEC.name}.gz").write_bytes(gz(PAYLOAD))

    def interrupted(src_path, dest):
        Path(dest).write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(dl, "_decompress_to", interrupted)
    cache = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        fetch([src], cache)
    assert no_partials(cache)


def test_partials_of_a_dead_process_are_swept_live_ones_kept(tmp_path):
    import os

    from fmnist.stages.download import sweep_partials

    cache = tmp_path / "cache"
    gone = cache / f".partial-{dead_pid()}-abc"
    live = cache / f".partial-{os.getpid()}-def"
    legacy = cache / ".partial-xyz"
    for d in (gone, live, legacy):
        d.mkdir(parents=True)
        (d / "raw").write_bytes(b"x")
    assert sweep_partials(cache) == [gone]
    assert live.exists() and legacy.exists()  # legacy: younger than an hour
    os.utime(legacy, (0, 0))
    assert sweep_partials(cache) == [legacy]


def test_a_sweep_removes_files_too_says_what_it_removed_and_waits_an_hour(tmp_path, caplog):
    import os
    import time

    from fmnist.stages.download import sweep_partials

    gone = tmp_path / f".partial-{dead_pid()}-file"
    gone.write_bytes(b"x")  # a temporary file rather than a folder
    just_over = tmp_path / ".partial-old"
    just_under = tmp_path / ".partial-young"
    for d in (just_over, just_under):
        d.mkdir()
    now = time.time()
    os.utime(just_over, (now - 3600.6, now - 3600.6))
    os.utime(just_under, (now - 3500, now - 3500))
    with caplog.at_level("WARNING", logger=LOGGER):
        assert sorted(sweep_partials(tmp_path)) == sorted([gone, just_over])
    assert not gone.exists() and just_under.exists()
    assert f"removed {gone}, left by an interrupted download" in caplog.messages


def test_verify_cache_checks_every_digest(tmp_path, caplog, copy_debian):
    from fmnist.stages.download import cache_problems, verify_cache

    paths = fetch_all([str(copy_debian(tmp_path / "src"))], tmp_path / "cache")
    assert verify_cache(paths) and cache_problems(paths) == {}
    victim = paths["t10k-labels-idx1-ubyte"]
    data = bytearray(victim.read_bytes())
    data[100] ^= 0x01
    victim.write_bytes(bytes(data))
    paths["train-labels-idx1-ubyte"].unlink()
    assert not verify_cache(paths)
    assert set(cache_problems(paths)) == {"t10k-labels-idx1-ubyte", "train-labels-idx1-ubyte"}
    assert "t10k-labels-idx1-ubyte is not valid" in caplog.text and "missing" in caplog.text
    victim_sha = sha256(bytes(data))
    assert cache_problems(paths) == {
        "t10k-labels-idx1-ubyte": (
            f"{victim}: sha256 {victim_sha}, expected {FILES['t10k-labels-idx1-ubyte'].sha256}"
        ),
        "train-labels-idx1-ubyte": f"{paths['train-labels-idx1-ubyte']}: missing",
    }
    assert (
        f"cached t10k-labels-idx1-ubyte is not valid ({victim}: sha256 {victim_sha}, expected "
        f"{FILES['t10k-labels-idx1-ubyte'].sha256}); it will be fetched again"
    ) in caplog.messages
    # Fetching again repairs exactly those two.
    again = fetch_all([str(tmp_path / "src")], tmp_path / "cache")
    assert verify_cache(again)


def test_a_file_not_in_the_paths_is_missing_by_name():
    from fmnist.stages.download import cache_problems

    assert cache_problems({}) == {name: f"{name}: missing" for name in FILES}


@pytest.mark.http
def test_two_trickling_mirrors_fail_at_the_whole_downloads_deadline(tmp_path, trickle_server):
    """Each mirror alone would get its 60 s; the whole download gets 1.5 s, both mirrors
    and every retry included."""
    import time

    (tmp_path / "slow" / f"{SPEC.name}.gz").write_bytes(gz(PAYLOAD) * 50)
    t0 = time.monotonic()
    with pytest.raises(DownloadError) as info:
        fetch(
            [trickle_server.url, trickle_server.url],
            tmp_path / "cache",
            timeout=5.0,
            deadline=60.0,
            retries=3,
            until=time.time() + 1.5,
        )
    assert time.monotonic() - t0 < 1.5 + 2.0  # the deadline, plus a read, plus slack
    message = str(info.value)
    assert "not complete within the download's deadline (data.download_deadline_s)" in message
    assert "not tried, the download's deadline had passed" in message  # the second mirror


def test_past_the_whole_deadline_nothing_is_tried_and_no_retry_is_asked_for(tmp_path):
    import time

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / f"{SPEC.name}.gz").write_bytes(gz(PAYLOAD))
    opts = FetchOptions(until=time.time() - 1)
    with pytest.raises(OutOfTime, match="not tried, the download's deadline had passed"):
        fetch_all([str(mirror)], tmp_path / "cache", opts)
    # Within its deadline the same download is a plain DownloadError (the task may retry).
    with pytest.raises(DownloadError) as info:
        fetch_all([str(mirror)], tmp_path / "cache2", FetchOptions(until=time.time() + 60))
    assert not isinstance(info.value, OutOfTime)  # other files are missing from that mirror


@pytest.mark.http
def test_a_file_that_arrives_in_time_is_not_held_to_the_deadline(tmp_path, http_server):
    # A few hundred bytes from 127.0.0.1 take milliseconds: well inside a deadline under 1 s.
    (http_server.root / f"{SPEC.name}.gz").write_bytes(gz(PAYLOAD))
    path, _ = fetch([http_server.url], tmp_path / "cache", deadline=0.95)
    assert path.read_bytes() == PAYLOAD


@pytest.mark.http
def test_a_retry_that_would_overrun_the_deadline_is_not_made(tmp_path, http_server, monkeypatch):
    sleeps: list[float] = []
    monkeypatch.setattr("fmnist.stages.http.time.sleep", sleeps.append)
    http_server.fail(f"/{SPEC.name}.gz", 503, 503)
    with pytest.raises(DownloadError) as info:
        fetch([http_server.url], tmp_path / "cache", retries=3, backoff=30.0, deadline=20.0)
    url = f"{http_server.url}/{SPEC.name}.gz"
    assert (
        f"{url}: not complete within the 20 s deadline (data.http_deadline_s); 0 bytes received"
    ) in str(info.value)
    assert sleeps == []
    assert http_server.requests.count(f"/{SPEC.name}.gz") == 1


def test_http_429_is_retried(tmp_path, http_server):
    (http_server.root / f"{SPEC.name}.gz").write_bytes(gz(PAYLOAD))
    http_server.fail(f"/{SPEC.name}.gz", 429)
    path, _ = fetch([http_server.url], tmp_path / "cache", retries=1)
    assert path.read_bytes() == PAYLOAD
    assert http_server.requests.count(f"/{SPEC.name}.gz") == 2


@pytest.mark.http
@pytest.mark.parametrize("status", [400, 403, 499])
def test_http_client_errors_other_than_429_are_not_retried(tmp_path, http_server, status):
    (http_server.root / f"{SPEC.name}.gz").write_bytes(gz(PAYLOAD))
    http_server.fail(f"/{SPEC.name}.gz", status)
    with pytest.raises(DownloadError, match=str(status)):
        fetch([http_server.url], tmp_path / "cache", retries=3)
    assert http_server.requests.count(f"/{SPEC.name}.gz") == 1


@pytest.mark.http
def test_http_500_is_retried(tmp_path, http_server):
    (http_server.root / f"{SPEC.name}.gz").write_bytes(gz(PAYLOAD))
    http_server.fail(f"/{SPEC.name}.gz", 500)
    path, _ = fetch([http_server.url], tmp_path / "cache", retries=1)
    assert path.read_bytes() == PAYLOAD


@pytest.mark.http
def test_a_body_shorter_than_its_content_length_is_an_error(tmp_path, http_server):
    # The body itself is a complete, valid file: only the announced length betrays the drop.
    (http_server.root / f"{SPEC.name}.gz").write_bytes(gz(PAYLOAD))
    http_server.overstate(f"/{SPEC.name}.gz", 100, 100)
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match="short read"):
        fetch([http_server.url], cache, retries=1)
    assert http_server.requests.count(f"/{SPEC.name}.gz") == 2  # retried, then given up
    assert not (cache / SPEC.name).exists()
    assert no_partials(cache)


@pytest.mark.http
def test_a_short_body_is_retried(tmp_path, http_server):
    (http_server.root / f"{SPEC.name}.gz").write_bytes(gz(PAYLOAD))
    http_server.overstate(f"/{SPEC.name}.gz", 1)
    path, origin = fetch([http_server.url], tmp_path / "cache", retries=1)
    assert path.read_bytes() == PAYLOAD
    assert origin == f"{http_server.url}/{SPEC.name}.gz"


@pytest.mark.http
def test_retries_back_off_exponentially(tmp_path, http_server, monkeypatch):
    (http_server.root / f"{SPEC.name}.gz").write_bytes(gz(PAYLOAD))
    http_server.fail(f"/{SPEC.name}.gz", 503, 503, 503)
    sleeps: list[float] = []
    monkeypatch.setattr("fmnist.stages.http.time.sleep", sleeps.append)
    fetch([http_server.url], tmp_path / "cache", retries=3, backoff=0.5)
    assert sleeps == [0.5, 1.0, 2.0]


def test_a_refused_connection_is_retried_then_reported(tmp_path, monkeypatch):
    # A port bound but not listening: connection refused, a network error like any other.
    sleeps: list[float] = []
    monkeypatch.setattr("fmnist.stages.http.time.sleep", sleeps.append)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
        with pytest.raises(DownloadError, match="refused") as info:
            fetch([dead], tmp_path / "cache", retries=2)
    assert dead in str(info.value)
    assert len(sleeps) == 2  # two retries after the first attempt


@pytest.mark.http
def test_a_base_url_with_a_trailing_slash_works(tmp_path, http_server):
    (http_server.root / f"{SPEC.name}.gz").write_bytes(gz(PAYLOAD))
    _, origin = fetch([http_server.url + "/"], tmp_path / "cache")
    assert origin == f"{http_server.url}/{SPEC.name}.gz"


@pytest.mark.http
def test_default_options_download_over_http(tmp_path, http_server):
    (http_server.root / f"{SPEC.name}.gz").write_bytes(gz(PAYLOAD))
    path, _ = fetch_file(SPEC, [http_server.url], tmp_path / "cache")
    assert path.read_bytes() == PAYLOAD


def test_a_new_cache_folder_is_created_with_its_parents(tmp_path):
    src = tmp_path / "mirror"
    src.mkdir()
    (src / f"{SPEC.name}.gz").write_bytes(gz(PAYLOAD))
    cache = tmp_path / "a" / "b" / "cache"
    path, _ = fetch([src], cache)
    assert path == cache / SPEC.name and path.read_bytes() == PAYLOAD


def test_no_sources_is_an_error_that_says_so(tmp_path):
    with pytest.raises(DownloadError, match="no sources configured"):
        fetch([], tmp_path / "cache")


def test_a_wrong_cached_copy_is_not_served(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / SPEC.name).write_bytes(PAYLOAD[:-1] + b"\x07")
    with pytest.raises(DownloadError):
        fetch([tmp_path / "empty"], cache)
    assert not (cache / SPEC.name).exists()


def test_a_local_folder_with_a_tilde_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / f"{SPEC.name}.gz").write_bytes(gz(PAYLOAD))
    _, origin = fetch(["~"], tmp_path / "cache")
    assert origin == str(tmp_path / f"{SPEC.name}.gz")


def test_fetch_all_reports_each_file_it_got(tmp_path, monkeypatch):
    spec_a = IdxFile("a-idx1-ubyte", sha256(PAYLOAD), len(PAYLOAD))
    spec_b = IdxFile("b-idx1-ubyte", sha256(PAYLOAD), len(PAYLOAD))
    monkeypatch.setattr("fmnist.stages.download.FILES", {s.name: s for s in (spec_a, spec_b)})
    src = tmp_path / "mirror"
    src.mkdir()
    for spec in (spec_a, spec_b):
        (src / f"{spec.name}.gz").write_bytes(gz(PAYLOAD))
    seen: list[tuple[str, str]] = []
    paths = fetch_all([str(src)], tmp_path / "cache", on_file=lambda n, o: seen.append((n, o)))
    assert sorted(paths) == ["a-idx1-ubyte", "b-idx1-ubyte"]
    assert seen == [(s.name, str(src / f"{s.name}.gz")) for s in (spec_a, spec_b)]


def test_fetch_all_fails_naming_only_the_missing_file(tmp_path, monkeypatch):
    spec_a = IdxFile("a-idx1-ubyte", sha256(PAYLOAD), len(PAYLOAD))
    spec_b = IdxFile("b-idx1-ubyte", sha256(PAYLOAD), len(PAYLOAD))
    monkeypatch.setattr("fmnist.stages.download.FILES", {s.name: s for s in (spec_a, spec_b)})
    src = tmp_path / "mirror"
    src.mkdir()
    (src / f"{spec_b.name}.gz").write_bytes(gz(PAYLOAD))
    with pytest.raises(DownloadError) as info:
        fetch_all([str(src)], tmp_path / "cache")
    assert "a-idx1-ubyte" in str(info.value)
    assert "no valid copy of b-idx1-ubyte" not in str(info.value)
    assert (tmp_path / "cache" / "b-idx1-ubyte").is_file()  # the good one was still fetched


def test_dataset_digest_depends_on_the_pinned_digests(monkeypatch):
    from dataclasses import replace

    import fmnist.stages.download as download

    before = dataset_digest()
    name = "train-labels-idx1-ubyte"
    spec = FILES[name]
    monkeypatch.setitem(download.FILES, name, replace(spec, sha256="0" * 64))
    changed_digest = dataset_digest()
    monkeypatch.setitem(download.FILES, name, replace(spec, name="renamed"))
    changed_name = dataset_digest()
    monkeypatch.setitem(download.FILES, name, replace(spec, size=1))
    changed_size = dataset_digest()
    assert len({before, changed_digest, changed_name}) == 3
    assert changed_size == before  # the size is not part of what identifies the data


def test_dataset_digest_is_stable():
    # Runs record it to say which data they used: a change of formula makes every earlier
    # run look as if it had used other data. This is the value for the four pinned files.
    assert dataset_digest() == DATASET_DIGEST


def test_rich_progress_reports_each_quarter_to_the_log():
    lines: list[str] = []
    with rich_progress(lines.append)("f.gz", 1000) as bar:
        for _ in range(10):
            bar.advance_bytes(100)
    assert lines == [
        "f.gz: 30% of 1,000 bytes",
        "f.gz: 50% of 1,000 bytes",
        "f.gz: 80% of 1,000 bytes",
        "f.gz: 100% of 1,000 bytes",
    ]


def test_rich_progress_bar_counts_the_bytes():
    with rich_progress()("f.gz", 1000) as bar:
        bar.advance_bytes(250)
        bar.advance_bytes(250)
    [task] = bar.tasks
    assert (task.description, task.total, task.completed) == ("f.gz", 1000, 500)


def test_rich_progress_bar_shows_name_bar_bytes_speed_and_time_left():
    from rich.console import Console

    with rich_progress()("f.gz", 2000) as bar:
        bar.advance_bytes(1000)
    console = Console(file=io.StringIO(), width=200, record=True, color_system=None)
    console.print(bar.make_tasks_table(bar.tasks))
    # Name, bar, bytes done of the total, speed (? until measured), time left.
    line = console.export_text().strip()
    assert re.fullmatch(
        r"f\.gz ━+ +1\.0/2\.0 kB (\?|[\d.]+ \w?B/s) (-:--:--|\d+:\d\d:\d\d)", line
    ), line


def test_rich_progress_without_a_total_reports_nothing():
    lines: list[str] = []
    with rich_progress(lines.append)("f.gz", None) as bar:
        bar.advance_bytes(100)
    assert lines == []


@pytest.mark.http
def test_a_body_without_a_content_length_is_read_to_the_end(tmp_path, http_server):
    (http_server.root / f"{SPEC.name}.gz").write_bytes(gz(PAYLOAD))
    http_server.overstate(f"/{SPEC.name}.gz", None)
    totals: list[int | None] = []

    class Bar:
        def __init__(self, desc, total):
            totals.append(total)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        def advance_bytes(self, n):
            pass

    path, _ = fetch([http_server.url], tmp_path / "cache", progress=Bar)
    assert path.read_bytes() == PAYLOAD
    assert totals == [None]  # unknown size: the bar gets no total


@pytest.mark.http
def test_each_retry_is_logged_with_its_reason_and_delay(tmp_path, http_server, caplog):
    (http_server.root / f"{SPEC.name}.gz").write_bytes(gz(PAYLOAD))
    http_server.fail(f"/{SPEC.name}.gz", 503, 429)
    url = f"{http_server.url}/{SPEC.name}.gz"
    with caplog.at_level("WARNING", logger=HTTP_LOGGER):
        fetch([http_server.url], tmp_path / "cache", retries=2, backoff=0.05)
    assert [r.getMessage() for r in caplog.records if r.name == HTTP_LOGGER] == [
        f"{url}: HTTP 503; retry 1/2 in 0.1s",
        f"{url}: HTTP 429; retry 2/2 in 0.1s",
    ]


def test_a_network_error_is_logged_with_its_reason(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr("fmnist.stages.http.time.sleep", lambda s: None)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
        with (
            caplog.at_level("WARNING", logger=HTTP_LOGGER),
            pytest.raises(DownloadError),
        ):
            fetch([dead], tmp_path / "cache", retries=1)
    [message] = [r.getMessage() for r in caplog.records if r.name == HTTP_LOGGER]
    assert message.startswith(f"{dead}/{SPEC.name}.gz: <urlopen error [Errno 111]")
    assert message.endswith("; retry 1/1 in 0.0s")


def test_a_server_that_never_answers_times_out(tmp_path, monkeypatch):
    # Accepts connections (the kernel's backlog) but never sends a byte.
    monkeypatch.setattr("fmnist.stages.http.time.sleep", lambda s: None)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        silent = f"http://127.0.0.1:{sock.getsockname()[1]}"
        with pytest.raises(DownloadError, match="timed out"):
            fetch([silent], tmp_path / "cache", retries=1, timeout=0.2)


def test_an_https_source_is_a_url_not_a_folder(tmp_path, monkeypatch):
    monkeypatch.setattr("fmnist.stages.http.time.sleep", lambda s: None)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"https://127.0.0.1:{sock.getsockname()[1]}"
        with pytest.raises(DownloadError) as info:
            fetch([dead], tmp_path / "cache", retries=0)
    assert f"{dead}: <urlopen error" in str(info.value)


def test_rich_progress_counts_from_zero():
    lines: list[str] = []
    with rich_progress(lines.append)("f.gz", 4) as bar:
        for _ in range(4):
            bar.advance_bytes(1)
    assert lines == [f"f.gz: {p}% of 4 bytes" for p in (25, 50, 75, 100)]


def test_verify_names_the_file_both_digests_and_where(tmp_path):
    path = tmp_path / SPEC.name
    path.write_bytes(PAYLOAD[:-1])
    with pytest.raises(DigestMismatch) as info:
        verify(path, SPEC)
    exc = info.value
    actual = sha256(PAYLOAD[:-1])
    assert (exc.name, exc.expected, exc.actual, exc.where) == (
        SPEC.name,
        SPEC.sha256,
        actual,
        str(path),
    )
    assert str(exc) == f"{SPEC.name} from {path}: sha256 {actual}, expected {SPEC.sha256}"
    path.write_bytes(PAYLOAD)
    assert verify(path, SPEC) == SPEC.sha256
