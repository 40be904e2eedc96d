"""Batch scoring: the score-images flow over 100 test images (and one bad file), through
Prefect's test harness into the served store, checked against `fmnist predict`."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from tests.serving.conftest import NAME, REPO

pytestmark = pytest.mark.serving


@pytest.fixture(scope="module")
def images(served_store, tmp_path_factory) -> Path:
    """100 test images as PNG files (in two folders: the search is recursive), one broken."""
    folder = tmp_path_factory.mktemp("to-score")
    for i in range(100):
        sub = folder / ("a" if i < 50 else "b")
        sub.mkdir(exist_ok=True)
        Image.fromarray(served_store.x_test[i]).save(sub / f"{i:03d}.png")
    (folder / "b" / "broken.png").write_bytes(b"not a png")
    return folder


def test_scoring_100_test_images_matches_predict(harness, served_store, images, tmp_path):
    from fmnist.flows.score_images import score_images
    from fmnist.tracking.registry import Registry

    # The store is the session's: another test may have promoted version 2 before this one.
    Registry(served_store.tracking_uri).set_alias(NAME, "champion", served_store.versions[0])
    overrides = {
        "tracking.tracking_uri": served_store.tracking_uri,
        "tracking.experiment": "scoring",
        "tracking.artifact_location": str(tmp_path / "artifacts"),
        "tracking.spool_dir": str(tmp_path / "spool"),
        "serving.batch_size": 32,  # several batches, one of them with the broken file
    }
    state = score_images(str(images), overrides=overrides, return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert (result["model_version"], result["images"], result["failed"]) == ("1", 101, 1)

    client = MlflowClient(served_store.tracking_uri)
    run = client.get_run(result["run_id"])
    assert run.data.tags["scored.model_version"] == "1"
    assert run.data.tags["scored.model_uri"] == f"models:/{NAME}@champion"
    assert run.data.metrics["images"] == 101 and run.data.metrics["failed"] == 1
    text = Path(client.download_artifacts(run.info.run_id, "predictions.csv")).read_text()
    rows = {Path(r["path"]).name: r for r in csv.DictReader(io.StringIO(text))}
    assert len(rows) == 101
    assert rows["broken.png"]["error"].startswith("cannot read image")

    # The same 100 files through `fmnist predict` (the Keras model, read_image).
    files = sorted(images.rglob("[0-9]*.png"))
    predicted = subprocess.run(
        [
            *(sys.executable, "-m", "fmnist.flows.cli", "predict", *map(str, files)),
            *("--model", f"models:/{NAME}/1", "--tracking-uri", served_store.tracking_uri),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    lines = re.findall(r"^(.+\.png): (.+) \(([\d.]+)\)$", predicted.stdout, re.MULTILINE)
    assert len(lines) == 100
    for path, name, probability in lines:
        row = rows[Path(path).name]
        assert row["class_name"] == name, path
        assert float(row["probability"]) == pytest.approx(float(probability), abs=1e-3)

    # The Prefect table artifact: one row per image, with the version in its description.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as prefect:
        (table,) = prefect.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
            )
        )
    assert table.key == "score-images" and table.type == "table"
    assert "version 1" in table.description
    assert len(json.loads(table.data)) == 101
