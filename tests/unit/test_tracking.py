"""The tracking module keeps each run in the store it was asked for."""

from __future__ import annotations

import os
import time

from tracking import _fluent_uri, backend_requirements, open_tracker, resolve_tracking_uri


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


def test_system_metrics_land_on_the_given_run(tmp_path):
    tracker = open_tracker(f"sqlite:///{tmp_path}/mlflow.db", "sysmetrics", str(tmp_path / "a"))
    run_id = tracker.start_run("busy")
    with tracker.system_metrics(run_id, interval_s=0.2):
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:  # some CPU work to sample
            sum(i * i for i in range(10_000))
    tracker.end_run(run_id)
    metrics = tracker.client.get_run(run_id).data.metrics
    for key in (
        "system/cpu_utilization_percentage",
        "system/system_memory_usage_megabytes",
        "system/system_memory_usage_percentage",
    ):
        assert key in metrics, sorted(metrics)
    assert 0 < metrics["system/system_memory_usage_percentage"] <= 100
    # One step per interval: a block of 1.5 s sampled every 0.2 s gives several.
    assert len(tracker.client.get_metric_history(run_id, "system/cpu_utilization_percentage")) >= 2


def test_system_metrics_interval_zero_records_nothing(tmp_path):
    tracker = open_tracker(f"sqlite:///{tmp_path}/mlflow.db", "sysmetrics", str(tmp_path / "a"))
    run_id = tracker.start_run("quiet")
    with tracker.system_metrics(run_id, interval_s=0):
        time.sleep(0.3)
    tracker.end_run(run_id)
    assert not any(k.startswith("system/") for k in tracker.client.get_run(run_id).data.metrics)


def test_a_logged_model_requires_the_backend_it_was_trained_on():
    import keras

    packages = {r.split("==")[0] for r in backend_requirements()}
    expected = {"tensorflow": {"tensorflow"}, "jax": {"jax", "jaxlib"}, "torch": {"torch"}}
    assert packages == expected[keras.backend.backend()]
