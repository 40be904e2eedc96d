"""The four models side by side: a table (CSV, Markdown) with each accuracy's 95 % interval,
the paired tests between them (stages/significance.py) as a second table, and two figures.

Plain logic over plain records (pandas + matplotlib): whoever calls it gathers the records,
from memory or from the tracking server, and decides where the outputs go.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fmnist.stages.significance import PairTest

COLUMNS = [
    "model",
    "params",
    "train_samples",
    "epochs",
    "test_accuracy",
    "ci_low",
    "ci_high",
    "chapter_accuracy",
    "difference",
    "best_val_accuracy",
    "training_seconds",
    "samples_per_second",
]


@dataclass(frozen=True)
class ModelResult:
    """What one trained model measured, and what the chapter reports for it."""

    model: str
    params: int
    train_samples: int
    epochs: int
    test_accuracy: float
    chapter_accuracy: float
    training_seconds: float
    samples_per_second: float
    val_accuracy: Sequence[float] = field(default_factory=tuple)
    ci_low: float = float("nan")  # the test accuracy's 95 % interval (nan: not logged)
    ci_high: float = float("nan")


def comparison_table(results: Sequence[ModelResult]) -> pd.DataFrame:
    """One row per model in COLUMNS order; difference = ours - chapter's."""
    rows = [
        {
            "model": r.model,
            "params": r.params,
            "train_samples": r.train_samples,
            "epochs": r.epochs,
            "test_accuracy": r.test_accuracy,
            "ci_low": r.ci_low,
            "ci_high": r.ci_high,
            "chapter_accuracy": r.chapter_accuracy,
            "difference": r.test_accuracy - r.chapter_accuracy,
            "best_val_accuracy": max(r.val_accuracy) if r.val_accuracy else float("nan"),
            "training_seconds": r.training_seconds,
            "samples_per_second": r.samples_per_second,
        }
        for r in results
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


PAIR_COLUMNS = [
    "a",
    "b",
    "difference",
    "diff_low",
    "diff_high",
    "a_only",
    "b_only",
    "p_value",
    "p_holm",
    "significant",
]
SIGNED = ("difference", "diff_low", "diff_high")  # shown with their sign
P_VALUES = ("p_value", "p_holm")


def pairs_table(tests: Sequence[PairTest]) -> pd.DataFrame:
    """One row per pair: difference in accuracy (a - b) and its 95 % interval, the images
    only a and only b get right, McNemar's p-value, Holm's, and the verdict at the level."""
    rows = [
        {
            "a": t.pair.a,
            "b": t.pair.b,
            "difference": t.pair.difference,
            "diff_low": t.pair.interval.low,
            "diff_high": t.pair.interval.high,
            "a_only": t.pair.a_only,
            "b_only": t.pair.b_only,
            "p_value": t.pair.p_value,
            "p_holm": t.p_adjusted,
            "significant": t.significant,
        }
        for t in tests
    ]
    return pd.DataFrame(rows, columns=PAIR_COLUMNS)


def _cell(column: str, value: object) -> str:
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, float):
        if np.isnan(value):
            return "-"
        if column in SIGNED:
            return f"{value:+.4f}"
        if column in P_VALUES:
            return f"{value:.3g}"
        if column in ("training_seconds", "samples_per_second"):
            return f"{value:,.1f}"
        return f"{value:.4f}"
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    return str(value)


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (numbers right-aligned)."""
    head = "| " + " | ".join(table.columns) + " |"
    text = ("model", "a", "b")  # left-aligned names
    align = "|" + "|".join("---" if c in text else "---:" for c in table.columns) + "|"
    body = [
        "| " + " | ".join(_cell(c, row[c]) for c in table.columns) + " |"
        for _, row in table.iterrows()
    ]
    return "\n".join([head, align, *body]) + "\n"


def accuracy_bars(table: pd.DataFrame) -> Figure:  # pragma: no mutate block
    """Test accuracy of each model next to the chapter's, as grouped bars."""
    fig = Figure(figsize=(9, 4.5), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(table))
    width = 0.38
    # The 95 % interval as error bars (asymmetric: Wilson's is); none where it is unknown.
    errors = np.array(
        [table["test_accuracy"] - table["ci_low"], table["ci_high"] - table["test_accuracy"]],
        dtype=np.float64,
    )
    ours = ax.bar(
        x - width / 2,
        table["test_accuracy"],
        width,
        yerr=np.nan_to_num(errors),
        capsize=3,
        label="this run (95 % interval)",
    )
    chapter = ax.bar(x + width / 2, table["chapter_accuracy"], width, label="chapter", alpha=0.6)
    ax.bar_label(ours, fmt="%.3f", fontsize=8)
    ax.bar_label(chapter, fmt="%.3f", fontsize=8)
    ax.set_xticks(x, table["model"])
    low = min(table["test_accuracy"].min(), table["chapter_accuracy"].min())
    ax.set_ylim(max(0.0, low - 0.1), 1.0)
    ax.set_ylabel("test accuracy")
    ax.set_title("Test accuracy: this run against the chapter")
    # Below the axes: inside, it would cover a bar.
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return fig


def val_accuracy_overlay(results: Sequence[ModelResult]) -> Figure:  # pragma: no mutate block
    """The models' val_accuracy per epoch, overlaid on one axis."""
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.subplots()
    for r in results:
        if r.val_accuracy:
            ax.plot(np.arange(1, len(r.val_accuracy) + 1), r.val_accuracy, "o-", label=r.model)
    ax.set_xlabel("epoch")
    ax.set_ylabel("val_accuracy")
    ax.set_title("Validation accuracy per epoch")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def describe_model(
    model: str,
    architecture: str,
    settings: dict[str, object],
    test_accuracy: float,
    chapter_accuracy: float,
    params: int,
) -> str:
    """A run description in Markdown: architecture, settings, result against the chapter."""
    lines = [
        f"### {model}",
        "",
        f"**Architecture**: {architecture} ({params:,} parameters).",
        "",
        "**Settings**: " + ", ".join(f"{k} {v}" for k, v in settings.items()) + ".",
        "",
        f"**Result**: test accuracy **{test_accuracy:.4f}**; the chapter reports "
        f"{chapter_accuracy:.4f} ({test_accuracy - chapter_accuracy:+.4f}).",
    ]
    return "\n".join(lines) + "\n"
