"""The comparison table, its Markdown, the figures and the run descriptions."""

from __future__ import annotations

import math

import pytest

from fmnist.stages.compare import (
    COLUMNS,
    PAIR_COLUMNS,
    ModelResult,
    accuracy_bars,
    comparison_table,
    describe_model,
    pairs_table,
    to_markdown,
    val_accuracy_overlay,
)
from fmnist.stages.significance import Interval, Paired, PairTest

RESULTS = [
    ModelResult(
        "conv_only", 3_989_642, 900, 2, 0.81, 0.8521, 12.0, 150.0, (0.70, 0.78), 0.79, 0.83
    ),
    ModelResult("vgg", 5_240_842, 900, 2, 0.84, 0.9252, 30.5, 59.0, (0.72, 0.83), 0.82, 0.86),
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
    assert md[2].startswith(
        "| conv_only | 3,989,642 | 900 | 2 | 0.8100 | 0.7900 | 0.8300 | 0.8521 | -0.0421 |"
    )
    assert md[4].split(" | ")[5:7] == ["-", "-"]  # no interval logged
    assert md[4].split(" | ")[9] == "-"  # best_val_accuracy unknown
    assert len(md) == 2 + len(RESULTS)


def test_bars_show_ours_with_intervals_and_the_chapters():
    fig = accuracy_bars(comparison_table(RESULTS))
    (ax,) = fig.axes
    heights = [p.get_height() for p in ax.patches]
    assert heights == pytest.approx([0.81, 0.84, 0.84, 0.8521, 0.9252, 0.8909])
    (bars,) = [c for c in ax.containers if getattr(c, "errorbar", None) is not None]
    segments = bars.errorbar.lines[2][0].get_segments()
    ends = [y for seg in segments for y in (seg[0][1], seg[1][1])]
    assert ends == pytest.approx([0.79, 0.83, 0.82, 0.86, 0.84, 0.84])  # the last: none
    assert [t.get_text() for t in ax.get_xticklabels()] == ["conv_only", "vgg", "pool_dropout"]


def test_overlay_has_one_curve_per_model_with_history():
    (ax,) = val_accuracy_overlay(RESULTS).axes
    assert [line.get_label() for line in ax.get_lines()] == ["conv_only", "vgg"]
    assert list(ax.get_lines()[1].get_ydata()) == [0.72, 0.83]


def test_description_states_result_against_chapter():
    text = describe_model("vgg", "Conv32 ...", {"epochs": 2}, 0.84, 0.9252, 5_240_842)
    assert "### vgg" in text and "5,240,842 parameters" in text
    assert "**0.8400**" in text and "0.9252 (-0.0852)" in text and "epochs 2" in text


def test_markdown_formats_every_kind_of_cell():
    results = [
        ModelResult("conv_only", 3_989_642, 900, 2, 0.81, 0.8521, 1234.56, 150.0, (0.70, 0.78)),
        ModelResult("pool_dropout", 241_546, 60_000, 25, 0.9, 0.8909, 5.0, 12_345.67, ()),
    ]
    md = to_markdown(comparison_table(results))
    assert md.endswith("\n")
    assert md.splitlines() == [
        "| " + " | ".join(COLUMNS) + " |",
        "|---|" + "---:|" * (len(COLUMNS) - 1),
        "| conv_only | 3,989,642 | 900 | 2 | 0.8100 | - | - | 0.8521 | -0.0421 | 0.7800 "
        "| 1,234.6 | 150.0 |",
        "| pool_dropout | 241,546 | 60,000 | 25 | 0.9000 | - | - | 0.8909 | +0.0091 | - | 5.0 "
        "| 12,345.7 |",
    ]


def test_an_empty_run_gives_an_empty_table_with_every_column():
    table = comparison_table([])
    assert list(table.columns) == COLUMNS and len(table) == 0
    assert to_markdown(table).splitlines()[0] == "| " + " | ".join(COLUMNS) + " |"


def pair_test(a, b, counts, p, p_holm, significant, interval=(-0.01, 0.03)):
    both, a_only, b_only, neither = counts
    return PairTest(
        Paired(a, b, both, a_only, b_only, neither, p, Interval(*interval)), p_holm, significant
    )


PAIRS = [
    pair_test("conv_only", "vgg", (700, 10, 60, 230), 1.2e-9, 7.2e-9, True, (-0.064, -0.037)),
    pair_test("conv_only", "pool_dropout", (760, 30, 25, 185), 0.59, 1.0, False),
]


def test_pairs_table_one_row_per_pair():
    table = pairs_table(PAIRS)
    assert list(table.columns) == PAIR_COLUMNS
    assert table.to_dict("records")[0] == {
        "a": "conv_only",
        "b": "vgg",
        "difference": pytest.approx(-0.05),
        "diff_low": -0.064,
        "diff_high": -0.037,
        "a_only": 10,
        "b_only": 60,
        "p_value": 1.2e-9,
        "p_holm": 7.2e-9,
        "significant": True,
    }
    assert table["difference"].tolist()[1] == pytest.approx(0.005)
    assert list(pairs_table([]).columns) == PAIR_COLUMNS


def test_pairs_markdown_signs_differences_keeps_small_p_values_and_says_yes_or_no():
    md = to_markdown(pairs_table(PAIRS)).splitlines()
    assert md[0] == "| " + " | ".join(PAIR_COLUMNS) + " |"
    assert md[1] == "|---|---|" + "---:|" * (len(PAIR_COLUMNS) - 2)
    assert (
        md[2]
        == "| conv_only | vgg | -0.0500 | -0.0640 | -0.0370 | 10 | 60 | 1.2e-09 | 7.2e-09 | yes |"
    )
    assert (
        md[3]
        == "| conv_only | pool_dropout | +0.0050 | -0.0100 | +0.0300 | 30 | 25 | 0.59 | 1 | no |"
    )


def test_table_keeps_every_measured_value():
    table = comparison_table(RESULTS)
    row = table.iloc[1]
    assert (row["model"], row["params"], row["train_samples"], row["epochs"]) == (
        "vgg",
        5_240_842,
        900,
        2,
    )
    assert (row["test_accuracy"], row["chapter_accuracy"]) == (0.84, 0.9252)
    assert (row["training_seconds"], row["samples_per_second"]) == (30.5, 59.0)


def test_description_in_full():
    text = describe_model(
        "vgg", "Conv32 ...", {"epochs": 2, "batch_size": 32}, 0.95, 0.9252, 5_240_842
    )
    assert text == (
        "### vgg\n"
        "\n"
        "**Architecture**: Conv32 ... (5,240,842 parameters).\n"
        "\n"
        "**Settings**: epochs 2, batch_size 32.\n"
        "\n"
        "**Result**: test accuracy **0.9500**; the chapter reports 0.9252 (+0.0248).\n"
    )
