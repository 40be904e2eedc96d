"""Quality gates: a NaN loss fails its model's run and registers nothing; bad floats exit 2."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.faults


def test_a_nan_loss_fails_the_run_naming_the_model_and_registers_nothing(workspace):
    done = workspace.run("train.learning_rate=1e6")
    assert done.returncode == 1, done.output[-3000:]
    assert "pool_dropout" in done.stderr and "non-finite loss" in done.stderr, done.stderr[-3000:]

    client = MlflowClient(tracking_uri=workspace.tracking_uri)
    exp = client.get_experiment_by_name("fashion-mnist-cnn")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {"pipeline-smoke", "pool_dropout"}
    child, parent = runs["pool_dropout"], runs["pipeline-smoke"]
    assert child.info.status == "FAILED"
    reason = child.data.tags["failure_reason"]
    assert reason.startswith("NonFiniteLoss: pool_dropout: non-finite loss")
    assert "epoch 1, batch" in reason  # stopped inside the first epoch
    assert "loss" not in child.data.metrics  # not one epoch logged as if it were fine
    assert parent.info.status == "FAILED" and "pool_dropout" in parent.data.tags["failure_reason"]
    assert client.search_registered_models() == []
    assert client.search_model_versions() == []


@pytest.mark.parametrize("value", ["inf", "nan"])
def test_a_non_finite_learning_rate_exits_2_before_any_run(workspace, value):
    done = workspace.run(f"train.learning_rate={value}")
    assert done.returncode == 2, done.output[-2000:]
    assert "train.learning_rate: Input should be a finite number" in done.stderr
    assert not workspace.db.exists()  # no store opened, no run
