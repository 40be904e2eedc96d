"""Bounded tracking calls: MLflow's retry settings from the profile, one clear error."""

from __future__ import annotations

import os
import time

import pytest

import fmnist.tracking.limits as limits_mod
from fmnist.conf import load_config
from fmnist.tracking import Tracker, TrackingUnavailable, open_tracker
from fmnist.tracking.limits import BACKOFF_FACTOR, MAX_RETRIES, TIMEOUT, RequestLimits
from tests.helpers import closed_port

VARS = (TIMEOUT, MAX_RETRIES, BACKOFF_FACTOR)


@pytest.fixture
def clean_env(monkeypatch):
    for name in VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(limits_mod, "_ours", {})
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0")


def test_the_profile_limits_reach_mlflow(clean_env):
    tracking = load_config("quick").tracking
    applied = RequestLimits.of(tracking).apply()
    assert applied == RequestLimits(
        tracking.request_timeout_s, tracking.max_retries, tracking.backoff_factor
    )
    assert os.environ[MAX_RETRIES] == str(tracking.max_retries)
    from mlflow.environment_variables import (
        MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR,
        MLFLOW_HTTP_REQUEST_MAX_RETRIES,
        MLFLOW_HTTP_REQUEST_TIMEOUT,
    )

    # The names are MLflow's own: what it reads is what we set.
    assert MLFLOW_HTTP_REQUEST_TIMEOUT.get() == tracking.request_timeout_s
    assert MLFLOW_HTTP_REQUEST_MAX_RETRIES.get() == tracking.max_retries
    assert MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get() == tracking.backoff_factor
    # The defaults ride out an outage of about a minute, and MLflow's 4 minutes are gone.
    assert 40 <= applied.refused_bound_s() <= 90


def test_a_value_the_user_set_wins_and_a_later_config_replaces_ours(clean_env, monkeypatch):
    RequestLimits(30, 5, 2).apply()
    assert RequestLimits(10, 1, 1).apply() == RequestLimits(10, 1, 1)  # ours: replaced
    monkeypatch.setenv(MAX_RETRIES, "0")
    assert RequestLimits(30, 5, 2).apply() == RequestLimits(30, 0, 2)


def test_the_bound_follows_urllib3s_backoff(clean_env):
    # No sleep before the first retry, then factor * 2**(k-1): 4 + 8 + 16 + 32 s.
    assert RequestLimits(30, 5, 2).backoff_s() == 60
    assert RequestLimits(30, 5, 2).bound_s() == 60 + 6 * 30
    assert RequestLimits(30, 0, 2).backoff_s() == 0


def test_every_tracker_call_to_a_dead_server_names_it(clean_env):
    uri = f"http://127.0.0.1:{closed_port()}"
    fast = RequestLimits(timeout_s=2, max_retries=1, backoff_factor=0)
    t0 = time.monotonic()
    with pytest.raises(TrackingUnavailable, match=f"tracking server {uri} unreachable"):
        open_tracker(uri, "exp", limits=fast)
    with pytest.raises(TrackingUnavailable, match="Connection refused"):
        Tracker(uri, "1", "exp").log.metrics("run", {"a": 1.0})
    assert time.monotonic() - t0 < 10


def test_other_errors_pass_through(tmp_path, fresh_store, clean_env):
    from mlflow.exceptions import MlflowException

    tracker = open_tracker(fresh_store, "exp", str(tmp_path / "art"))
    with pytest.raises(MlflowException) as info:
        tracker.log.metrics("no-such-run", {"a": 1.0})
    assert not isinstance(info.value, TrackingUnavailable)
