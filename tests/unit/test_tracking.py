"""The tracking module keeps each run in the store it was asked for."""

from __future__ import annotations

import os

from tracking import _fluent_uri, resolve_tracking_uri


def test_fluent_use_leaves_the_environment_as_it_was(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with _fluent_uri(f"sqlite:///{tmp_path}/a.db"):
        pass
    # MLflow's set_tracking_uri writes the variable; a later run must not inherit it.
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert resolve_tracking_uri("sqlite:///b.db") == "sqlite:///b.db"

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://server:5000")
    with _fluent_uri(f"sqlite:///{tmp_path}/a.db"):
        pass
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://server:5000"
    assert resolve_tracking_uri("sqlite:///b.db") == "http://server:5000"
