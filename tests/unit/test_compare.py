"""The comparison table, its Markdown, the figures and the run descriptions."""

from __future__ import annotations

import math

import pytest

from stages.compare import (
    COLUMNS,
    ModelResult,
    accuracy_bars,
    comparison_table,
    describe_model,
    to_markdown,
    val_accuracy_overlay,
)

RESULTS = [
    ModelResult("conv_only", 3_989_642, 900, 2, 0.81, 0.8521, 12.0, 150.0, (0.70, 0.78)),
    ModelResult("vgg", 5_240_842, 900, 2, 0.84, 0.9252, 30.5, 59.0, (0.72, 0.83)),
    ModelResult("pool_dropout", 241_546, 900, 2, 0.84, 0.8909, 5.0, 360.0, ()),
]


def test_table_rows_and_derived_columns():
    table = comparison_table(RESULTS)
    assert list(table.columns) == COLUMNS
    assert table["model"].tolist() == ["conv_only", "vgg", "pool_dropout"]
    assert table["difference"].tolist() == pytest.approx(
        [0.81 - 0.8521, 0.84 - 0.9252, 0.84 - 0.8909]
    )
    assert table["best_val_accuracy"].tolist()[:2] == [0.78, 0.83]
    assert math.isnan(table["best_val_accuracy"].iloc[2])  # no curve: no best


def test_markdown_table():
    md = to_markdown(comparison_table(RESULTS)).splitlines()
    assert md[0] == "| " + " | ".join(COLUMNS) + " |"
    assert md[1].startswith("|---|---:|")
    assert md[2].startswith("| conv_only | 3,989,642 | 900 | 2 | 0.8100 | 0.8521 | -0.0421 |")
    assert md[4].split(" | ")[7] == "-"  # best_val_accuracy unknown
    assert len(md) == 2 + len(RESULTS)


def test_bars_show_ours_and_the_chapters():
    fig = accuracy_bars(comparison_table(RESULTS))
    (ax,) = fig.axes
    heights = [p.get_height() for p in ax.patches]
    assert heights == pytest.approx([0.81, 0.84, 0.84, 0.8521, 0.9252, 0.8909])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["conv_only", "vgg", "pool_dropout"]


def test_overlay_has_one_curve_per_model_with_history():
    (ax,) = val_accuracy_overlay(RESULTS).axes
    assert [line.get_label() for line in ax.get_lines()] == ["conv_only", "vgg"]
    assert list(ax.get_lines()[1].get_ydata()) == [0.72, 0.83]


def test_description_states_result_against_chapter():
    text = describe_model("vgg", "Conv32 ...", {"epochs": 2}, 0.84, 0.9252, 5_240_842)
    assert "### vgg" in text and "5,240,842 parameters" in text
    assert "**0.8400**" in text and "0.9252 (-0.0852)" in text and "epochs 2" in text
