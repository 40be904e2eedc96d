"""The certificate against the chapter (stages/certificate.py): its table, record, Markdown,
text and figure, from accuracies over seeds."""

from __future__ import annotations

import json
import math

import pytest
from scipy import stats

from fmnist.stages.certificate import (
    COLUMNS,
    VERDICTS,
    certificate_figure,
    certificate_markdown,
    certificate_record,
    certificate_table,
    certificate_text,
    certify,
)
from fmnist.stages.significance import ABOVE, BELOW, INSIDE

ACCURACIES = {"conv_only": [0.50, 0.52, 0.51], "vgg": [0.93, 0.92, 0.94]}
CHAPTER = {"conv_only": 0.8521, "vgg": 0.9252, "pool_dropout": 0.8909}
T2 = stats.t.ppf(0.975, 2)
CONTEXT = {"profile": "smoke", "test_images": 500}


def test_certify_summarises_each_model_in_order():
    rows = certify(ACCURACIES, CHAPTER)
    assert [r.model for r in rows] == ["conv_only", "vgg"]
    assert [r.chapter for r in rows] == [0.8521, 0.9252]
    assert [r.accuracies for r in rows] == [(0.50, 0.52, 0.51), (0.93, 0.92, 0.94)]
    assert [r.verdict for r in rows] == [ABOVE, INSIDE]


def test_verdicts_in_words():
    assert VERDICTS == {
        INSIDE: "reproduced (chapter inside)",
        ABOVE: "below the chapter (chapter above)",
        BELOW: "above the chapter (chapter below)",
    }


def test_table_has_every_column():
    table = certificate_table(certify(ACCURACIES, CHAPTER))
    assert list(table.columns) == COLUMNS
    row = table.to_dict("records")[0]
    half_mean, half_run = T2 * 0.01 / math.sqrt(3), T2 * 0.01 * math.sqrt(4 / 3)
    assert row == {
        "model": "conv_only",
        "seeds": 3,
        "mean": pytest.approx(0.51),
        "mean_low": pytest.approx(0.51 - half_mean),
        "mean_high": pytest.approx(0.51 + half_mean),
        "spread": pytest.approx(0.01),
        "run_low": pytest.approx(0.51 - half_run),
        "run_high": pytest.approx(0.51 + half_run),
        "chapter": 0.8521,
        "verdict": "below the chapter (chapter above)",
    }
    assert list(certificate_table([]).columns) == COLUMNS


def test_record_is_json_with_everything_per_model():
    rows = certify(ACCURACIES, CHAPTER)
    record = certificate_record(rows, [42, 43, 44], CONTEXT, {"pool_dropout": "1 of 3 seeds"})
    assert json.loads(json.dumps(record)) == record
    assert record["profile"] == "smoke" and record["test_images"] == 500
    assert record["seeds"] == [42, 43, 44] and record["confidence"] == 0.95
    assert record["not_certified"] == {"pool_dropout": "1 of 3 seeds"}
    vgg = record["models"]["vgg"]
    assert vgg["accuracies"] == [0.93, 0.92, 0.94]
    assert vgg["mean"] == pytest.approx(0.93) and vgg["spread"] == pytest.approx(0.01)
    assert vgg["mean_interval"] == [rows[1].mean_interval.low, rows[1].mean_interval.high]
    assert vgg["run_interval"] == [rows[1].run_interval.low, rows[1].run_interval.high]
    assert vgg["chapter"] == 0.9252 and vgg["verdict"] == INSIDE
    assert list(record["models"]) == ["conv_only", "vgg"]


def test_markdown_in_full():
    rows = certify({"vgg": [0.85, 0.86]}, CHAPTER)
    md = certificate_markdown(rows, "Certificate: profile smoke, 2 seeds")
    t1 = stats.t.ppf(0.975, 1)  # 12.706
    sd = math.sqrt(0.00005)
    mean_half, run_half = t1 * sd / math.sqrt(2), t1 * sd * math.sqrt(1.5)  # within [0, 1]
    assert md == (
        "### Certificate: profile smoke, 2 seeds\n"
        "\n"
        "| model | seeds | mean | 95 % CI of the mean | spread (sd) | one run, 95 % | chapter "
        "| verdict |\n"
        "|---|---:|---:|---:|---:|---:|---:|---|\n"
        f"| vgg | 2 | 0.8550 | {0.855 - mean_half:.4f} - {0.855 + mean_half:.4f} | {sd:.4f} "
        f"| {0.855 - run_half:.4f} - {0.855 + run_half:.4f} | 0.9252 "
        "| reproduced (chapter inside) |\n"
        "\n"
        "Test accuracy over seeds, on the same test images. The verdict places the chapter's "
        "figure (one run) against the range where one run of ours falls (Student's t "
        "prediction interval); the mean's interval says how well the mean is known.\n"
    )


def test_text_for_the_terminal():
    rows = certify(ACCURACIES, CHAPTER)
    record = certificate_record(rows, [42, 43, 44], CONTEXT, {"pool_dropout": "1 of 3 seeds"})
    lines = certificate_text(record).splitlines()
    assert lines[0] == "certificate of profile smoke, seeds [42, 43, 44] (500 test images):"
    assert lines[1].split() == [
        "model", "mean", "95%", "CI", "of", "mean", "spread", "one", "run,", "95%", "chapter",
        "verdict",
    ]  # fmt: skip
    r = rows[0]
    assert lines[2] == (
        f"conv_only        0.5100  {r.mean_interval.low:.4f}-{r.mean_interval.high:.4f}  "
        f" 0.0100  {r.run_interval.low:.4f}-{r.run_interval.high:.4f}    0.8521  "
        "below the chapter (chapter above)"
    )
    assert lines[3].startswith("vgg ") and lines[3].endswith("reproduced (chapter inside)")
    assert lines[4] == "pool_dropout: not certified, 1 of 3 seeds"
    assert len(lines) == 5


def test_figure_marks_the_chapter_and_every_seed():
    fig = certificate_figure(certify(ACCURACIES, CHAPTER), "smoke")
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["conv_only", "vgg"]
    chapter = next(line for line in ax.get_lines() if line.get_label() == "chapter")
    assert list(chapter.get_ydata()) == [0.8521, 0.9252]


def test_the_certify_task_reads_each_finished_scored_seed_in_seed_order():
    from types import SimpleNamespace

    from fmnist.tasks.certify import accuracies_of, run_key

    def run(status: str, accuracy: float | None = None):
        metrics = {} if accuracy is None else {"test_accuracy": accuracy}
        return SimpleNamespace(
            info=SimpleNamespace(status=status), data=SimpleNamespace(metrics=metrics)
        )

    assert run_key("vgg_augmented", 43) == "vgg_augmented-seed43"
    runs = {
        "vgg-seed44": run("FINISHED", 0.3),
        "vgg-seed42": run("FINISHED", 0.1),
        "vgg-seed43": run("FAILED", 0.2),  # scored, then failed: not counted
        "conv_only-seed42": run("FINISHED"),  # finished without a score
        "conv_only-seed43": run("FINISHED", 0.5),
    }
    found = accuracies_of(runs, ["vgg", "conv_only", "pool_dropout"], [42, 43, 44])
    assert found == {"vgg": [0.1, 0.3], "conv_only": [0.5], "pool_dropout": []}
