"""Download: source order, digest checks, atomic cache, HTTP retries, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stages.download import (
    FILES,
    DownloadError,
    FetchOptions,
    IdxFile,
    dataset_digest,
    fetch_all,
    fetch_file,
    sha256_file,
)
from stages.load import LABELS_MAGIC
from tests.conftest import gz, idx_bytes, sha256

PAYLOAD = idx_bytes(np.arange(200, dtype=np.uint8) % 10, LABELS_MAGIC)
SPEC = IdxFile("tiny-labels-idx1-ubyte", sha256(PAYLOAD), len(PAYLOAD))


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


def test_dataset_digest_depends_on_pinned_digests():
    assert len(dataset_digest()) == 64
    assert dataset_digest() == dataset_digest()


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
    assert no_partials(cache) and not (cache / SPEC.name).exists()


def test_a_keyboard_interrupt_mid_download_leaves_no_partial_files(tmp_path, monkeypatch):
    import stages.download as dl

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
    import subprocess
    import sys

    from stages.download import sweep_partials

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    cache = tmp_path / "cache"
    gone = cache / f".partial-{dead.stdout.strip()}-abc"
    live = cache / f".partial-{os.getpid()}-def"
    legacy = cache / ".partial-xyz"
    for d in (gone, live, legacy):
        d.mkdir(parents=True)
        (d / "raw").write_bytes(b"x")
    assert sweep_partials(cache) == [gone]
    assert live.exists() and legacy.exists()  # legacy: younger than an hour
    os.utime(legacy, (0, 0))
    assert sweep_partials(cache) == [legacy]


def test_verify_cache_checks_every_digest(tmp_path, caplog, copy_debian):
    from stages.download import cache_problems, verify_cache

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
    # Fetching again repairs exactly those two.
    again = fetch_all([str(tmp_path / "src")], tmp_path / "cache")
    assert verify_cache(again)
