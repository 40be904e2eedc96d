"""The certificate against the chapter: each model trained with several seeds, its test
accuracy over them (stages/significance.py: over_seeds) against the chapter's figure, as a
table, Markdown, a figure and a JSON-able record.

Plain logic over plain values (pandas + matplotlib): the certify task reads the accuracies
back from the tracking store and decides where the outputs go.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fmnist.stages.significance import ABOVE, BELOW, CONFIDENCE, INSIDE, OverSeeds, over_seeds

COLUMNS = [
    "model",
    "seeds",
    "mean",
    "mean_low",
    "mean_high",
    "spread",
    "run_low",
    "run_high",
    "chapter",
    "verdict",
]
# The verdict in words: where the chapter's figure lies against the range of one run.
VERDICTS = {
    INSIDE: "reproduced (chapter inside)",
    ABOVE: "below the chapter (chapter above)",
    BELOW: "above the chapter (chapter below)",
}


def certify(
    accuracies: Mapping[str, Sequence[float]], chapter: Mapping[str, float]
) -> list[OverSeeds]:
    """One summary per model (in `accuracies`' order) of its accuracies over the seeds."""
    return [over_seeds(m, values, chapter[m]) for m, values in accuracies.items()]


def certificate_table(rows: Sequence[OverSeeds]) -> pd.DataFrame:
    """One row per model in COLUMNS order."""
    records = [
        {
            "model": r.model,
            "seeds": len(r.accuracies),
            "mean": r.mean,
            "mean_low": r.mean_interval.low,
            "mean_high": r.mean_interval.high,
            "spread": r.spread,
            "run_low": r.run_interval.low,
            "run_high": r.run_interval.high,
            "chapter": r.chapter,
            "verdict": VERDICTS[r.verdict],
        }
        for r in rows
    ]
    return pd.DataFrame(records, columns=COLUMNS)


def certificate_record(
    rows: Sequence[OverSeeds],
    seeds: Sequence[int],
    context: Mapping[str, Any],
    not_certified: Mapping[str, str],
) -> dict[str, Any]:
    """The certificate as JSON-able data: what was run (context), the seeds, and per model
    every accuracy, the mean with its interval, the spread, one run's range and the verdict;
    not_certified: model -> why it has no row (too few seeds finished)."""
    return {
        **context,
        "seeds": list(seeds),
        "confidence": CONFIDENCE,
        "models": {
            r.model: {
                "accuracies": list(r.accuracies),
                "mean": r.mean,
                "mean_interval": [r.mean_interval.low, r.mean_interval.high],
                "spread": r.spread,
                "run_interval": [r.run_interval.low, r.run_interval.high],
                "chapter": r.chapter,
                "verdict": r.verdict,
            }
            for r in rows
        },
        "not_certified": dict(not_certified),
    }


def certificate_markdown(rows: Sequence[OverSeeds], heading: str) -> str:
    """A Markdown certificate: a heading line, the table, and how to read it."""
    head = (
        "| model | seeds | mean | 95 % CI of the mean | spread (sd) | one run, 95 % "
        "| chapter | verdict |"
    )
    lines = [f"### {heading}", "", head, "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(
            f"| {r.model} | {len(r.accuracies)} | {r.mean:.4f} "
            f"| {r.mean_interval.low:.4f} - {r.mean_interval.high:.4f} | {r.spread:.4f} "
            f"| {r.run_interval.low:.4f} - {r.run_interval.high:.4f} | {r.chapter:.4f} "
            f"| {VERDICTS[r.verdict]} |"
        )
    lines += [
        "",
        "Test accuracy over seeds, on the same test images. The verdict places the chapter's "
        "figure (one run) against the range where one run of ours falls (Student's t "
        "prediction interval); the mean's interval says how well the mean is known.",
    ]
    return "\n".join(lines) + "\n"


def certificate_text(record: Mapping[str, Any]) -> str:
    """certificate_record's data as a plain-text table, for a terminal."""
    lines = [
        f"certificate of profile {record['profile']}, seeds {record['seeds']} "
        f"({record['test_images']} test images):",
        f"{'model':<15} {'mean':>7} {'95% CI of mean':>15} {'spread':>7} "
        f"{'one run, 95%':>15} {'chapter':>8}  verdict",
    ]
    for name, m in record["models"].items():
        (mean_low, mean_high), (run_low, run_high) = m["mean_interval"], m["run_interval"]
        lines.append(
            f"{name:<15} {m['mean']:>7.4f} {mean_low:>7.4f}-{mean_high:<7.4f} "
            f"{m['spread']:>7.4f} {run_low:>7.4f}-{run_high:<7.4f} {m['chapter']:>8.4f}  "
            f"{VERDICTS[m['verdict']]}"
        )
    lines += [f"{name}: not certified, {why}" for name, why in record["not_certified"].items()]
    return "\n".join(lines) + "\n"


def certificate_figure(rows: Sequence[OverSeeds], title: str) -> Figure:  # pragma: no mutate block
    """Per model: each seed's accuracy, the mean with its interval (thick) and one run's
    range (thin), and the chapter's figure as a red diamond."""
    fig = Figure(figsize=(9, 4.5), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(rows))
    for i, r in enumerate(rows):
        ax.vlines(i, r.run_interval.low, r.run_interval.high, color="C0", lw=1.5, alpha=0.5)
        ax.vlines(i, r.mean_interval.low, r.mean_interval.high, color="C0", lw=6)
        ax.plot([i] * len(r.accuracies), r.accuracies, "o", color="C1", ms=4, alpha=0.8)
    ax.plot(x, [r.mean for r in rows], "_", color="black", ms=22, mew=2, label="mean over seeds")
    ax.plot(x, [r.chapter for r in rows], "D", color="C3", label="chapter")
    ax.plot([], [], "o", color="C1", label="one seed")
    ax.plot([], [], color="C0", lw=6, label="95 % CI of the mean")
    ax.plot([], [], color="C0", lw=1.5, alpha=0.5, label="one run, 95 %")
    ax.set_xticks(x, [r.model for r in rows])
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=5, frameon=False)
    return fig
