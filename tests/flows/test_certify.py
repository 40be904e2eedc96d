"""End to end: the certify flow on the smoke profile, through Prefect's test harness into a
temporary MLflow store: 4 models x 3 seeds, the certificate checked against the runs; and a
certificate that failed half-way resumes only its unfinished (model, seed) runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from fmnist.stages.models import REGISTRY, ModelSpec, build_pool_dropout

pytestmark = pytest.mark.e2e

SEEDS = [42, 43, 44]


def folders(root: Path, debian_dir: Path) -> dict[str, object]:
    """Overrides that put the store, the caches and the checkpoints under root."""
    return {
        "tracking.tracking_uri": f"sqlite:///{root}/mlruns/mlflow.db",
        "tracking.artifact_location": str(root / "mlruns" / "artifacts"),
        "tracking.spool_dir": str(root / "spool"),
        "tracking.system_metrics_interval_s": 0,
        "data.cache_dir": str(root / "data" / "fashion-mnist"),
        "data.prepared_dir": str(root / "data" / "prepared"),
        "data.store_uri": str(root / "data" / "store"),
        "train.checkpoint_dir": str(root / "checkpoints"),
        "data.sources": [str(debian_dir)],
    }


def runs_by_name(client: MlflowClient) -> dict[str, object]:
    exp = client.get_experiment_by_name("fashion-mnist-cnn")
    return {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}


def artifact(client: MlflowClient, run_id: str, path: str) -> str:
    return Path(client.download_artifacts(run_id, path)).read_text()


@pytest.fixture(scope="module")
def certified(harness, tmp_path_factory, debian_dir):
    from fmnist.flows.certify import certify

    workdir = folders(tmp_path_factory.mktemp("certify"), debian_dir)
    state = certify(profile="smoke", seeds=3, overrides=workdir, return_state=True)
    return state, MlflowClient(tracking_uri=workdir["tracking.tracking_uri"])


def test_the_smoke_certificate_with_three_seeds(certified):
    state, client = certified
    assert state.is_completed(), state.message
    record = state.result()
    runs = runs_by_name(client)
    parent = runs.pop("certificate-smoke")
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["flow"] == "certify"
    assert parent.data.tags["certificate.seeds"] == "42,43,44"
    # One child per model and seed, each seeded and tested on the same images.
    assert set(runs) == {f"{m}-seed{s}" for m in REGISTRY for s in SEEDS}
    for name, run in runs.items():
        model, seed = name.rsplit("-seed", 1)
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert (run.data.tags["model"], run.data.tags["seed"]) == (model, seed)
        assert run.data.tags["run_key"] == name and run.data.params["seed"] == seed
    assert len({r.data.tags["test_set_digest"] for r in runs.values()}) == 1

    # The certificate on the parent: JSON, Markdown, figure; the same as the flow returned.
    files = {f.path for f in client.list_artifacts(parent.info.run_id, "certificate")}
    assert files == {
        "certificate/certificate.json",
        "certificate/certificate.md",
        "certificate/certificate.png",
    }
    stored = json.loads(artifact(client, parent.info.run_id, "certificate/certificate.json"))
    assert stored == json.loads(json.dumps(record))
    assert record["profile"] == "smoke" and record["seeds"] == SEEDS
    assert record["test_images"] == 500 and record["not_certified"] == {}
    assert record["parent_run_id"] == parent.info.run_id
    assert list(record["models"]) == list(REGISTRY)
    varied = 0
    for model, m in record["models"].items():
        measured = [runs[f"{model}-seed{s}"].data.metrics["test_accuracy"] for s in SEEDS]
        assert m["accuracies"] == pytest.approx(measured)
        assert m["mean"] == pytest.approx(sum(measured) / 3)
        assert m["chapter"] == REGISTRY[model].chapter_test_accuracy
        low, high = m["run_interval"]
        assert low <= m["mean_interval"][0] <= m["mean"] <= m["mean_interval"][1] <= high
        chapter = m["chapter"]
        expected = "above" if chapter > high else "below" if chapter < low else "inside"
        assert m["verdict"] == expected
        assert parent.data.metrics[f"certificate.mean.{model}"] == pytest.approx(m["mean"])
        assert parent.data.tags[f"certificate.verdict.{model}"] == m["verdict"]
        varied += len(set(measured)) > 1
    assert varied >= 1  # the seeds change what training draws
    md = artifact(client, parent.info.run_id, "certificate/certificate.md")
    assert all(f"| {model} | 3 |" in md for model in REGISTRY)
    # An evaluation, not a release: nothing registered.
    assert client.search_registered_models() == []


def test_the_certificate_is_a_prefect_table_too(certified):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    state, _ = certified
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
            )
        )
    artifacts = {a.key: a for a in found}
    table = artifacts["certificate"]
    rows = table.data if isinstance(table.data, list) else json.loads(table.data)
    assert [r["model"] for r in rows] == list(REGISTRY)
    assert all(r["seeds"] == 3 for r in rows)
    assert "| model | seeds | mean |" in artifacts["certificate-md"].data


def test_a_failed_certificate_resumes_only_its_unfinished_runs(
    harness, tmp_path, debian_dir, monkeypatch
):
    from fmnist.flows.certify import certify

    builds: list[str] = []

    def flaky(name: str):
        builds.append(name)
        if len(builds) == 2:  # the second seed's first attempt
            raise RuntimeError("flaky: the second build fails")
        return build_pool_dropout(name)

    spec = ModelSpec("flaky", flaky, "pool_dropout, failing once", 241_546, 0.8909)
    monkeypatch.setitem(REGISTRY, "flaky", spec)
    overrides = {**folders(tmp_path, debian_dir), "train.models": ["pool_dropout", "flaky"]}
    client = MlflowClient(tracking_uri=overrides["tracking.tracking_uri"])

    first = certify(profile="smoke", seeds=2, overrides=overrides, return_state=True)
    assert first.is_failed()
    assert "1 of 4 training runs failed: flaky-seed43: RuntimeError: flaky" in first.message
    before = runs_by_name(client)
    parent = before["certificate-smoke"]
    assert parent.info.status == "FAILED"
    assert before["flaky-seed43"].info.status == "FAILED"
    partial = json.loads(artifact(client, parent.info.run_id, "certificate/certificate.json"))
    assert list(partial["models"]) == ["pool_dropout"]
    assert partial["not_certified"] == {"flaky": "1 of 2 seeds finished and were scored"}

    again = certify(profile="smoke", seeds=2, overrides=overrides, return_state=True)
    assert again.is_completed(), again.message
    after = runs_by_name(client)
    assert set(after) == set(before)  # the same runs: one parent, four children
    assert after["certificate-smoke"].info.run_id == parent.info.run_id
    for name in ("pool_dropout-seed42", "pool_dropout-seed43", "flaky-seed42"):
        assert after[name].info.run_id == before[name].info.run_id
        assert after[name].info.end_time == before[name].info.end_time  # not trained again
    assert after["flaky-seed43"].info.run_id == before["flaky-seed43"].info.run_id
    assert after["flaky-seed43"].info.status == "FINISHED"
    assert builds == ["flaky", "flaky", "flaky"]  # only the failed one was built again
    record = again.result()
    assert list(record["models"]) == ["pool_dropout", "flaky"]
    assert record["not_certified"] == {}
