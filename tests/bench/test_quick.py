"""The benchmark's quick mode end to end, on tiny data: one process per model and code path."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fmnist.bench.settings import K80_SECONDS_PER_EPOCH

pytestmark = pytest.mark.bench


def test_quick_mode_writes_consistent_json_and_a_table(debian_dir, tmp_path):
    models = ["pool_dropout", "vgg_augmented"]  # the augmented path included
    cmd = [
        sys.executable,
        "-m",
        "bench",
        "--quick",
        f"--data={debian_dir}",
        f"--cache={tmp_path / 'cache'}",
        f"--out={tmp_path / 'out'}",
        "--train-subset=300",
        "--test-subset=200",
        "--n-augmented=100",
        "--epochs=1",
        "--models",
        *models,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [path] = (tmp_path / "out").glob("*-quick.json")
    report = json.loads(path.read_text())
    context = report["context"]
    assert context["backend"] == os.environ["KERAS_BACKEND"]
    assert path.name.startswith(f"cpu{os.cpu_count()}-{context['backend']}-")
    assert [row["model"] for row in report["models"]] == models

    for row in report["models"]:
        for runner in ("ours", "plain"):
            m = row[runner]
            assert m["imported_forbidden"] == [], "the GPU mode must need keras + numpy only"
            assert m["epochs"] == 1 and len(m["epoch_seconds"]) == 1
            assert m["first_epoch_s"] == m["steady_epoch_s"] and m["compile_s"] == 0
            for key in ("fit_s", "fit_cpu_s", "steady_tflops", "peak_rss_mb", "params"):
                assert m[key] > 0, key
            assert m["samples_per_s"] == pytest.approx(m["train_samples"] / m["fit_s"])
            assert m["fit_s"] >= m["first_epoch_s"]
            assert 0 <= m["test_accuracy"] <= 1
        # The same net on the same images through both code paths.
        assert row["ours"]["params"] == row["plain"]["params"]
        assert row["ours"]["train_samples"] == row["plain"]["train_samples"]
        assert row["ours_vs_plain_cpu"] > 0
        assert ("vs_k80" in row) == (row["model"] in K80_SECONDS_PER_EPOCH)
    # 300 originals + 100 augmented, less the 0.25 validation split.
    assert report["models"][1]["ours"]["train_samples"] == 300
    assert report["totals"]["ours_fit_s"] == pytest.approx(
        sum(row["ours"]["fit_s"] for row in report["models"])
    )
    table = path.with_suffix(".md").read_text()
    assert all(f"| {m} |" in table for m in models)
