"""The tracking layer's plain parts without a store: the spool's files, the UI links, the
request bounds and the unreachable-server error, the lineage rows of a stand-in tracker."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

import fmnist.tracking.limits as limits_mod
from fmnist.tracking.keys import PARENT
from fmnist.tracking.limits import (
    BACKOFF_FACTOR,
    BACKOFF_JITTER,
    MAX_RETRIES,
    TIMEOUT,
    RequestLimits,
    TrackingUnavailable,
    is_unreachable,
    names_the_server,
    reaching,
)
from fmnist.tracking.links import Links
from fmnist.tracking.provenance import (
    CONFIG_DIGEST,
    DEPLOYMENT,
    FLOW_RUN_ID,
    GIT_BRANCH,
    GIT_COMMIT,
    GIT_DIRTY,
    LINEAGE_KEYS,
    SOURCE_TYPE,
    config_digest,
    lineage,
    provenance_tags,
)
from fmnist.tracking.spool import IDS, OPS, PLACEHOLDER, STORE, Spool

# -- the spool ------------------------------------------------------------------------------


def test_operations_are_kept_in_order_with_their_store(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", store="http://tracking:5000")
    spool.append("run1", "log_metrics", {"metrics": {"a": 1.0}, "step": 1})
    spool.append("run1", "set_tags", {"tags": {"k": "v"}})
    folder = tmp_path / "spool" / "run1"
    assert spool.folder("run1") == folder
    assert (folder / STORE).read_text() == "http://tracking:5000"
    assert [json.loads(line) for line in (folder / OPS).read_text().splitlines()] == [
        {"op": "log_metrics", "args": {"metrics": {"a": 1.0}, "step": 1}},
        {"op": "set_tags", "args": {"tags": {"k": "v"}}},
    ]
    assert spool.ops("run1")[1] == {"op": "set_tags", "args": {"tags": {"k": "v"}}}
    assert spool.pending("run1") == 2 and spool.pending("other") == 0
    assert spool.ops("other") == []
    assert spool.store_of("run1") == "http://tracking:5000"
    assert spool.store_of("other") is None
    assert spool.runs() == ["run1"]
    assert Spool(tmp_path / "nowhere").runs() == []


def test_the_store_is_recorded_once_and_only_if_known(tmp_path: Path) -> None:
    Spool(tmp_path, store="first").append("r", "a", {})
    Spool(tmp_path, store="second").append("r", "b", {})
    assert Spool(tmp_path).store_of("r") == "first"
    Spool(tmp_path).append("s", "a", {})
    assert not (tmp_path / "s" / STORE).exists()


def test_a_file_an_operation_needs_is_kept_beside_it_and_dropped_with_it(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append("r", "log_artifact", {"name": "x"}, write_file=lambda p: (p / "f").write_text("1"))
    spool.append("r", "log_artifact", {"name": "y"}, write_file=lambda p: (p / "f").write_text("2"))
    spool.append("r", "set_tags", {"tags": {}})
    first, second, third = spool.ops("r")
    assert first["args"]["name"] == "x" and first["args"]["blob"].startswith("file-")
    assert len(first["args"]["blob"]) == len("file-") + 12
    assert first["args"]["blob"] != second["args"]["blob"]
    assert (spool.blob("r", first["args"]["blob"]) / "f").read_text() == "1"
    assert "blob" not in third["args"]
    spool.done("r", 1)
    assert not spool.blob("r", first["args"]["blob"]).exists()
    assert (spool.blob("r", second["args"]["blob"]) / "f").read_text() == "2"  # still waiting
    assert spool.ops("r") == [second, third]
    assert not list((tmp_path / "r").glob(".ops.*"))  # the rewrite left no partial file
    spool.done("r", 2)
    assert not (tmp_path / "r").exists() and spool.runs() == []
    spool.done("r", 0)  # nothing left, no folder: nothing to do


def test_dropping_operations_rewrites_the_log_in_its_own_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil
    import tempfile

    spool = Spool(tmp_path)
    spool.append("r", "log_artifact", {}, write_file=lambda p: (p / "f").write_text("1"))
    spool.append("r", "set_tags", {"tags": {}})
    shutil.rmtree(spool.blob("r", spool.ops("r")[0]["args"]["blob"]))  # already gone
    # The new log is written beside the old one (an atomic replace), never in the system's
    # temporary folder, which may be another file system.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-folder"))
    spool.done("r", 1)
    assert spool.ops("r") == [{"op": "set_tags", "args": {"tags": {}}}]


def test_a_hold_doubles_up_to_the_longest_and_is_seen_by_every_spool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path)
    spool.hold("r", 10, 300)  # no folder: nothing to hold
    assert not (tmp_path / "r").exists()
    spool.append("r", "a", {})
    now = 1000.0
    monkeypatch.setattr(time, "time", lambda: now)
    waits = []
    for _ in range(7):
        spool.hold("r", 10, 300)
        until, wait = Spool(tmp_path)._hold("r")
        assert until == now + wait
        waits.append(wait)
    assert waits == [10, 20, 40, 80, 160, 300, 300]
    assert Spool(tmp_path).held("r")
    now = 1000.0 + 300
    assert not spool.held("r")  # until is not still on hold
    (tmp_path / "r" / "retry-after").write_text("garbage")
    assert spool._hold("r") == (0.0, 0.0) and not spool.held("r")
    assert spool._hold("missing") == (0.0, 0.0)


def test_a_run_created_while_away_gets_the_servers_id(tmp_path: Path) -> None:
    fresh = Spool(tmp_path / "not" / "made")  # the first mapping makes its folders
    fresh.map_id(f"{PLACEHOLDER}a", "id-a")
    fresh.map_id(f"{PLACEHOLDER}b", "id-b")  # and the next one finds them
    assert [fresh.resolve(f"{PLACEHOLDER}{x}") for x in "ab"] == ["id-a", "id-b"]
    spool = Spool(tmp_path)
    placeholder = spool.placeholder()
    assert placeholder.startswith(PLACEHOLDER) and len(placeholder) == len(PLACEHOLDER) + 32
    assert spool.placeholder() != placeholder
    assert spool.resolve(placeholder) == placeholder  # not created yet
    assert spool.resolve("abc") == "abc"
    spool.map_id(placeholder, "server-id-1")
    assert (tmp_path / IDS / placeholder).read_text() == "server-id-1"
    # Written beside the map (an atomic replace), never in the system's temporary folder.
    import tempfile

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-folder"))
        spool.map_id(f"{PLACEHOLDER}c", "id-c")
    assert spool.resolve(f"{PLACEHOLDER}c") == "id-c"
    assert not list((tmp_path / IDS).glob(".*"))
    assert spool.resolve(placeholder) == "server-id-1"
    assert Spool(tmp_path).resolve(placeholder) == "server-id-1"
    (tmp_path / IDS / placeholder).write_text("  \n")
    assert spool.resolve(placeholder) == placeholder
    assert spool.runs() == []  # the id map is not a run


# -- links ----------------------------------------------------------------------------------


def test_links_into_the_ui() -> None:
    links = Links("http://127.0.0.1:5000/", "7")
    assert links.experiment() == "http://127.0.0.1:5000/#/experiments/7/runs"
    assert links.run("abc") == "http://127.0.0.1:5000/#/experiments/7/runs/abc"
    assert links.compare(["r1", "r2"]) == (
        "http://127.0.0.1:5000/#/compare-runs?runs=%5B%22r1%22%2C%22r2%22%5D"
        "&experiments=%5B%227%22%5D"
    )


# -- request limits -------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """None of MLflow's request variables set, by the user or by us."""
    for name in (TIMEOUT, MAX_RETRIES, BACKOFF_FACTOR, BACKOFF_JITTER):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(limits_mod, "_ours", {})


def test_the_defaults_and_the_settings() -> None:
    assert RequestLimits() == RequestLimits(30, 5, 2)
    settings = SimpleNamespace(request_timeout_s=7, max_retries=3, backoff_factor=1)
    assert RequestLimits.of(settings) == RequestLimits(7, 3, 1)


def test_the_limits_in_force(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    limits = RequestLimits(7, 3, 1)
    assert limits.current() == limits
    monkeypatch.setenv(TIMEOUT, "9")
    monkeypatch.setenv(BACKOFF_FACTOR, "4")
    assert limits.current() == RequestLimits(9, 3, 4)  # the user's win
    assert limits.apply() == RequestLimits(9, 3, 4)
    import os

    assert os.environ[MAX_RETRIES] == "3" and os.environ[TIMEOUT] == "9"
    assert RequestLimits(1, 2, 3).apply() == RequestLimits(9, 2, 4)  # ours replaced
    assert os.environ[MAX_RETRIES] == "2"  # what MLflow reads, not only what we return
    assert RequestLimits(5, 6, 7).current() == RequestLimits(9, 6, 4)  # ours: not the user's
    monkeypatch.delenv(TIMEOUT)
    monkeypatch.delenv(MAX_RETRIES)  # ours, removed by someone else: the defaults again
    assert RequestLimits(5, 6, 7).current() == RequestLimits(5, 6, 4)


def test_the_backoff_with_jitter_and_its_cap(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Default jitter 1 s per retry: (4 + 1) + (8 + 1) + (16 + 1) + (32 + 1) s.
    assert RequestLimits(30, 5, 2).backoff_s() == 64
    monkeypatch.setenv(BACKOFF_JITTER, "0.5")
    assert RequestLimits(30, 2, 2).backoff_s() == 4.5
    assert RequestLimits(30, 2, 2).refused_bound_s() == 4.5
    assert RequestLimits(10, 2, 2).bound_s() == 4.5 + 3 * 10
    monkeypatch.setenv(BACKOFF_JITTER, "0")
    assert RequestLimits(30, 9, 2).backoff_s() == 4 + 8 + 16 + 32 + 64 + 120 + 120 + 120


class MlflowException(Exception):
    """Named as MLflow's: is_unreachable recognises it by name and message."""


def test_what_counts_as_unreachable() -> None:
    import urllib3

    assert is_unreachable(requests.exceptions.ConnectionError("refused"))
    assert is_unreachable(requests.exceptions.ReadTimeout("slow"))
    assert is_unreachable(requests.exceptions.RetryError("spent"))
    assert is_unreachable(urllib3.exceptions.MaxRetryError(None, "/x"))
    assert is_unreachable(ConnectionRefusedError())
    assert is_unreachable(TimeoutError())
    assert is_unreachable(MlflowException("API request failed with timeout exception"))
    assert not is_unreachable(MlflowException("RESOURCE_DOES_NOT_EXIST"))
    assert not is_unreachable(ValueError("bad value"))
    try:
        try:
            raise ConnectionRefusedError("refused")
        except ConnectionRefusedError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert is_unreachable(outer)  # a cause down the chain counts
    try:
        try:
            raise ConnectionRefusedError("refused")
        except ConnectionRefusedError:
            raise RuntimeError("while handling it")  # noqa: B904 (chained implicitly)
    except RuntimeError as implicit:
        assert is_unreachable(implicit)  # raised while handling one: its context counts
    import ssl

    try:
        try:
            raise ssl.SSLCertVerificationError("certificate verify failed")
        except ssl.SSLError as bad_ca:
            raise requests.exceptions.SSLError("HTTPSConnectionPool: Max retries") from bad_ca
    except requests.exceptions.SSLError as untrusted:
        # A ConnectionError to requests, but a setting to fix: no waiting for it to pass.
        assert not is_unreachable(untrusted)
    loop = RuntimeError("loop")
    loop.__context__ = RuntimeError("back")
    loop.__context__.__context__ = loop
    assert not is_unreachable(loop)  # a cycle ends


def test_an_unreachable_server_is_named_with_the_bound(clean_env: None, monkeypatch) -> None:
    monkeypatch.setenv(BACKOFF_JITTER, "0")
    monkeypatch.setenv(MAX_RETRIES, "2")
    uri = "http://tracking.example:5000"
    with pytest.raises(TrackingUnavailable) as err, reaching(uri):
        try:
            raise ConnectionRefusedError("Connection refused")
        except ConnectionRefusedError as exc:
            raise requests.exceptions.ConnectionError("max retries") from exc
    assert str(err.value) == (
        f"tracking server {uri} unreachable (ConnectionRefusedError: Connection refused); "
        "gave up after 2 retries (bound 4 s if refused, 94 s if silent: "
        "tracking.request_timeout_s, tracking.max_retries, tracking.backoff_factor)"
    )
    assert isinstance(err.value.__cause__, requests.exceptions.ConnectionError)


def test_other_errors_and_local_stores_pass_through() -> None:
    with pytest.raises(ValueError, match="bad"), reaching("http://x:1"):
        raise ValueError("bad")
    with pytest.raises(ConnectionError), reaching("sqlite:///mlflow.db"):
        raise ConnectionError("a local store")
    with pytest.raises(TrackingUnavailable, match=r"^as it was$"), reaching("https://x:1"):
        raise TrackingUnavailable("as it was")
    with pytest.raises(TrackingUnavailable), reaching("https://x:1"):
        raise TimeoutError("silent")


def test_a_decorated_method_names_its_trackers_server() -> None:
    class Tracker:
        tracking_uri = "http://tracking:5000"

        @names_the_server
        def call(self, value: int, *, fail: bool = False) -> int:
            """Return value, or fail as a dead server would."""
            if fail:
                raise requests.exceptions.ConnectionError("refused")
            return value

    assert Tracker.call.__name__ == "call"
    assert Tracker().call(3) == 3
    with pytest.raises(TrackingUnavailable, match="tracking server http://tracking:5000 "):
        Tracker().call(3, fail=True)


# -- provenance -----------------------------------------------------------------------------


def test_the_config_digest_leaves_out_only_the_tracking_uri() -> None:
    base = {"seed": 1, "tracking": {"tracking_uri": "http://a", "experiment": "e"}}
    moved = {"seed": 1, "tracking": {"tracking_uri": "http://b", "experiment": "e"}}
    assert config_digest(base) == config_digest(moved)
    assert config_digest(base) != config_digest({**base, "tracking": {"experiment": "f"}})
    assert base["tracking"]["tracking_uri"] == "http://a"  # the caller's mapping untouched
    text = '{"seed":1,"tracking":{"experiment":"e"}}'
    import hashlib

    assert config_digest(base) == hashlib.sha256(text.encode()).hexdigest()
    assert (
        config_digest({"tracking": "not a section"})
        == hashlib.sha256(b'{"tracking":"not a section"}').hexdigest()
    )
    assert config_digest({"path": Path("/a")}) == hashlib.sha256(b'{"path":"/a"}').hexdigest()


def test_a_deployments_run_is_a_job(monkeypatch: pytest.MonkeyPatch) -> None:
    import fmnist.tracking.provenance as provenance

    flow = {FLOW_RUN_ID: "f-1", DEPLOYMENT: "pipeline/nightly"}
    monkeypatch.setattr(provenance, "prefect_flow_run", lambda: flow)
    monkeypatch.setattr(provenance, "git_state", lambda: {GIT_COMMIT: "abc"})
    monkeypatch.setattr(provenance, "os_user", lambda: "box")
    tags = provenance_tags("flows/pipeline.py:flow", {"seed": 1}, "d" * 64)
    assert tags == {
        "mlflow.source.name": "flows/pipeline.py:flow",
        SOURCE_TYPE: "JOB",
        GIT_COMMIT: "abc",
        **flow,
        CONFIG_DIGEST: config_digest({"seed": 1}),
        "dataset_digest": "d" * 64,
        "mlflow.user": "box",  # who ran it (a worker on another machine: its user there)
    }
    monkeypatch.setattr(provenance, "os_user", lambda: None)  # a uid without a name
    assert "mlflow.user" not in provenance_tags("flows/pipeline.py:flow", {}, "d" * 64)


def run_of(run_id: str, name: str, tags: dict, metrics: dict | None = None) -> SimpleNamespace:
    """A stand-in MLflow run."""
    info = SimpleNamespace(run_id=run_id, run_name=name, status="FINISHED")
    return SimpleNamespace(info=info, data=SimpleNamespace(tags=tags, metrics=metrics or {}))


def stand_in_tracker(
    version: SimpleNamespace, runs: dict[str, SimpleNamespace], uri: str
) -> SimpleNamespace:
    """A tracker with a registry that knows one version (by its URI), and these runs."""
    registry = SimpleNamespace(model_version=lambda asked: {uri: version}[asked])
    return SimpleNamespace(registry=registry, get_run=lambda run_id: runs[run_id])


def test_lineage_rows_from_the_version_to_the_commit() -> None:
    version = SimpleNamespace(
        name="cnn",
        version="3",
        aliases=["champion", "b"],
        source="models:/m-1",
        run_id="child",
        tags={GIT_COMMIT: "from-the-version"},
    )
    runs = {
        "child": run_of(
            "child",
            "vgg",
            {PARENT: "parent", GIT_COMMIT: "from-the-child", "git.dirty": "False"},
            {"test_accuracy": 0.91234},
        ),
        "parent": run_of("parent", "pipeline", {CONFIG_DIGEST: "c1", "git.dirty": "True"}),
    }
    rows = lineage(
        stand_in_tracker(version, runs, "models:/cnn@champion"),
        "models:/cnn@champion",
        "test_accuracy",
    )
    assert rows[:6] == [
        ("model", "cnn version 3"),
        ("aliases", "champion, b"),
        ("registered from", "models:/m-1"),
        ("model run", "child (vgg, FINISHED)"),
        ("test accuracy", "0.9123"),
        ("pipeline run", "parent (pipeline, FINISHED)"),
    ]
    tail = dict(rows[6:])
    assert len(rows[6:]) == len(LINEAGE_KEYS)
    assert tail["git commit"] == "from-the-version"  # the version's, over the runs'
    assert tail["local changes"] == "False"  # the child's, over the parent's
    assert tail["config digest"] == "c1"  # the parent's
    assert tail["deployment"] == "-"
    assert [label for label, _ in rows[6:]] == [
        "git commit",
        "local changes",
        "git branch",
        "prefect flow run",
        "flow run name",
        "flow run url",
        "deployment",
        "config digest",
        "dataset digest",
    ]


def test_lineage_of_a_version_without_a_parent_or_a_run() -> None:
    version = SimpleNamespace(
        name="cnn", version="1", aliases=[], source="s", run_id="child", tags=None
    )
    runs = {"child": run_of("child", "vgg", {CONFIG_DIGEST: "c2"})}
    rows = dict(
        lineage(stand_in_tracker(version, runs, "models:/cnn/1"), "models:/cnn/1", "test_accuracy")
    )
    assert rows["aliases"] == "-" and rows["test accuracy"] == "-"
    assert "pipeline run" not in rows and rows["config digest"] == "c2"
    orphan = SimpleNamespace(name="cnn", version="2", source="s", run_id=None, tags={})
    rows = dict(
        lineage(stand_in_tracker(orphan, {}, "models:/cnn/2"), "models:/cnn/2", "test_accuracy")
    )
    assert "model run" not in rows and rows["aliases"] == "-" and rows["git commit"] == "-"


def test_git_is_asked_with_a_bound(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import subprocess

    import fmnist.tracking.provenance as provenance

    calls = []

    def run(args: list[str], **kwargs: object) -> SimpleNamespace:
        calls.append((args, kwargs))
        return SimpleNamespace(stdout=" out \n")

    def failing(error: BaseException):
        def run(args: list[str], **kwargs: object) -> SimpleNamespace:
            raise error

        return run

    def use(run_with) -> None:
        fake = SimpleNamespace(run=run_with, SubprocessError=subprocess.SubprocessError)
        monkeypatch.setattr(provenance, "subprocess", fake)

    use(run)
    assert provenance._git("status", "--porcelain", root=tmp_path) == "out"
    kwargs = {"cwd": tmp_path, "capture_output": True, "text": True, "timeout": 10, "check": True}
    assert calls == [(["git", "status", "--porcelain"], kwargs)]
    for error in (OSError("no git"), subprocess.TimeoutExpired("git", 10)):
        use(failing(error))
        assert provenance._git("status", root=tmp_path) is None


def test_git_state_when_the_status_cannot_be_read(monkeypatch: pytest.MonkeyPatch) -> None:
    import fmnist.tracking.provenance as provenance

    answers = {
        ("rev-parse", "HEAD"): "abc123",
        ("status", "--porcelain", "--untracked-files=no"): None,
        ("rev-parse", "--abbrev-ref", "HEAD"): "HEAD",  # detached: no branch claimed
    }
    monkeypatch.setattr(provenance, "_git", lambda *args, root: answers[args])
    assert provenance.git_state(Path("/checkout")) == {GIT_COMMIT: "abc123", "git.dirty": "unknown"}


def test_git_state_asks_the_checkout_it_is_given(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import subprocess

    from fmnist.tracking.provenance import git_state

    repo, elsewhere = tmp_path / "repo", tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t"}
    env |= {"GIT_COMMITTER_EMAIL": "t@x", "GIT_CONFIG_GLOBAL": "/dev/null"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    subprocess.run(["git", "init", "-q", "-b", "feature-x", str(repo)], check=True)
    (repo / "f").write_text("1")
    subprocess.run(["git", "-C", str(repo), "add", "f"], check=True)
    subprocess.run(["git", "-C", str(repo), "commit", "-qm", "one"], check=True)
    head = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    monkeypatch.chdir(elsewhere)  # not a checkout: every question goes to `root`
    assert git_state(repo) == {GIT_COMMIT: head, GIT_DIRTY: "False", GIT_BRANCH: "feature-x"}
    (repo / "f").write_text("2")
    assert git_state(repo)[GIT_DIRTY] == "True"
    assert git_state(elsewhere) == {}
