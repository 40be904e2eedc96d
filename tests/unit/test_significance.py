"""Intervals, paired tests and the math over seeds (stages/significance.py), on constructed
predictions whose answer is known: equal models, a clearly better one, a tiny difference on
many images; and against independent computations (the formulas written out, scipy's exact
binomial test, the Wald interval where it is good)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from fmnist.stages.significance import (
    ABOVE,
    BELOW,
    CONFIDENCE,
    INSIDE,
    MIN_SEEDS,
    Interval,
    Paired,
    all_pairs,
    correct,
    holm,
    newcombe,
    over_seeds,
    paired,
    table,
    wilson,
)

Z = stats.norm.ppf(0.975)  # 1.959963984540054


def predictions(both: int, a_only: int, b_only: int, neither: int, seed: int = 0):
    """Labels and two models' predictions with exactly these counts of the paired table,
    shuffled (a wrong prediction is the label plus one, mod 10)."""
    n = both + a_only + b_only + neither
    labels = np.random.default_rng(seed).integers(0, 10, n)
    a_right = np.array([True] * both + [True] * a_only + [False] * b_only + [False] * neither)
    b_right = np.array([True] * both + [False] * a_only + [True] * b_only + [False] * neither)
    order = np.random.default_rng(seed + 1).permutation(n)
    a_right, b_right = a_right[order], b_right[order]
    wrong = (labels + 1) % 10
    return np.where(a_right, labels, wrong), np.where(b_right, labels, wrong), labels


def wilson_by_hand(k: int, n: int) -> tuple[float, float]:
    """Wilson's score interval, the textbook formula."""
    p = k / n
    centre = (p + Z**2 / (2 * n)) / (1 + Z**2 / n)
    half = Z * math.sqrt(p * (1 - p) / n + Z**2 / (4 * n**2)) / (1 + Z**2 / n)
    return centre - half, centre + half


def newcombe_by_hand(both: int, a_only: int, b_only: int, neither: int) -> tuple[float, float]:
    """Newcombe's method 10 as his paper writes it (phi 0 when a margin is empty)."""
    n = both + a_only + b_only + neither
    p1, p2 = (both + a_only) / n, (both + b_only) / n
    l1, u1 = wilson_by_hand(both + a_only, n)
    l2, u2 = wilson_by_hand(both + b_only, n)
    a = (both + a_only) * (b_only + neither) * (both + b_only) * (a_only + neither)
    phi = (both * neither - a_only * b_only) / math.sqrt(a) if a else 0.0
    delta = math.sqrt((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)
    eps = math.sqrt((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2)
    return p1 - p2 - delta, p1 - p2 + eps


# -- one accuracy ----------------------------------------------------------------------------


@pytest.mark.parametrize(("k", "n"), [(8521, 10_000), (9288, 10_000), (3, 500), (499, 500)])
def test_wilson_is_the_textbook_interval(k, n):
    interval = wilson(k, n)
    assert (interval.low, interval.high) == pytest.approx(wilson_by_hand(k, n), abs=1e-12)


def test_wilson_at_the_ends_and_its_confidence():
    assert wilson(0, 10) == Interval(0.0, pytest.approx(Z**2 / (10 + Z**2)))  # 0.2775
    assert wilson(10, 10).high == pytest.approx(1.0) and wilson(10, 10).low < 1.0
    assert CONFIDENCE == 0.95
    one = wilson(1, 1)  # a single image is enough for an interval (a wide one)
    assert one.low == pytest.approx(1 / (1 + Z**2)) and one.high == pytest.approx(1.0)
    wider = wilson(50, 100, confidence=0.99)
    assert wider.low < wilson(50, 100).low and wider.high > wilson(50, 100).high
    with pytest.raises(ValueError, match="at least one image"):
        wilson(0, 0)


def test_correct_compares_image_by_image_and_refuses_other_images():
    assert correct(np.array([1, 2, 3]), np.array([1, 0, 3])).tolist() == [True, False, True]
    with pytest.raises(ValueError, match="not the same images"):
        correct(np.array([1, 2]), np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="not the same images"):
        correct(np.zeros((2, 2)), np.zeros((2, 2)))


def test_the_verdicts_words_are_what_the_certificate_records():
    assert (INSIDE, ABOVE, BELOW) == ("inside", "above", "below")


def test_interval_places_a_value_ends_inclusive():
    i = Interval(0.4, 0.6)
    assert [i.place(v) for v in (0.39, 0.4, 0.5, 0.6, 0.61)] == [
        BELOW,
        INSIDE,
        INSIDE,
        INSIDE,
        ABOVE,
    ]


# -- two models on the same images ----------------------------------------------------------


def test_the_paired_table_counts_each_kind_of_image():
    a = np.array([1, 1, 0, 0, 1], bool)
    b = np.array([1, 0, 1, 0, 0], bool)
    assert table(a, b).tolist() == [[1, 2], [1, 1]]
    with pytest.raises(ValueError, match="not paired"):
        table(a, b[:4])


def test_equal_models_differ_in_nothing():
    a, _, labels = predictions(800, 0, 0, 200)
    c = paired("a", a, "b", a.copy(), labels)
    assert (c.both, c.a_only, c.b_only, c.neither, c.n) == (800, 0, 0, 200, 1000)
    assert c.p_value == 1.0 and c.difference == 0.0 and c.better is None
    assert c.interval.low < 0 < c.interval.high
    assert c.interval.high - c.interval.low < 0.01  # identical: phi = 1, next to nothing
    assert not holm([c], 0.05)[0].significant


def test_a_clearly_better_model_is_significant():
    a, b, labels = predictions(840, 110, 10, 40)
    c = paired("good", a, "poor", b, labels)
    assert (c.a_only, c.b_only) == (110, 10)
    assert c.difference == pytest.approx(0.1) and c.better == "good"
    assert c.p_value == pytest.approx(stats.binomtest(10, 120).pvalue, rel=1e-9)
    assert c.p_value < 1e-20
    assert 0 < c.interval.low < 0.1 < c.interval.high
    assert holm([c], 0.05)[0].significant
    swapped = paired("poor", b, "good", a, labels)
    assert swapped.better == "good" and swapped.difference == pytest.approx(-0.1)
    assert swapped.p_value == c.p_value


def test_a_tiny_difference_on_many_images_is_not_significant():
    # +0.1 pp on 10,000 images: 60 against 50 of the images they disagree on.
    a, b, labels = predictions(9000, 60, 50, 890)
    c = paired("new", a, "old", b, labels)
    assert c.difference == pytest.approx(0.001) and c.better == "new"
    assert c.p_value == pytest.approx(stats.binomtest(50, 110).pvalue, rel=1e-9)
    assert c.p_value > 0.3
    assert c.interval.low < 0 < c.interval.high
    assert not holm([c], 0.05)[0].significant


def test_mcnemar_exact_known_value():
    # 7 against 1 discordant: two-sided 2 * P(X <= 1 | 8, 1/2) = 2 * 9 / 256.
    a, b, labels = predictions(30, 7, 1, 2)
    assert paired("a", a, "b", b, labels).p_value == pytest.approx(18 / 256, rel=1e-12)


def test_no_images_no_comparison():
    empty = np.array([], dtype=np.int64)
    with pytest.raises(ValueError, match="no images"):
        paired("a", empty, "b", empty, empty)


@pytest.mark.parametrize(
    "counts",
    [
        (14, 5, 0, 22),  # Altman et al., Statistics with Confidence, table 6.2
        (1, 1, 7, 12),  # Bentur et al. 2009, in Fagerland et al.'s book
        (9000, 100, 150, 750),
        (0, 0, 5, 5),  # a empty margin: phi taken as 0
        (5, 0, 0, 0),
    ],
)
def test_newcombe_is_method_10(counts):
    both, a_only, b_only, neither = counts
    found = newcombe(np.array([[both, a_only], [b_only, neither]]))
    assert (found.low, found.high) == pytest.approx(newcombe_by_hand(*counts), abs=1e-12)


def test_newcombe_agrees_with_wald_where_wald_is_good():
    # 10,000 images, 250 discordant: the simple interval on the paired difference is fine.
    b, c, n = 100, 150, 10_000
    d = (b - c) / n
    se = math.sqrt(b + c - (b - c) ** 2 / n) / n
    found = newcombe(np.array([[9000, b], [c, n - 9000 - b - c]]))
    assert found.low == pytest.approx(d - Z * se, abs=1e-4)
    assert found.high == pytest.approx(d + Z * se, abs=1e-4)


def test_newcombe_stays_within_minus_one_and_one():
    assert newcombe(np.array([[0, 10], [0, 0]])).high == pytest.approx(1.0)
    assert newcombe(np.array([[0, 0], [10, 0]])).low == pytest.approx(-1.0)


def pair(p_value: float, name: str = "x") -> Paired:
    return Paired(name, "y", 10, 2, 1, 3, p_value, Interval(-0.1, 0.2))


def test_holm_adjusts_in_place_and_keeps_the_order():
    tests = holm([pair(0.01, "a"), pair(0.04, "b"), pair(0.03, "c")], 0.05)
    assert [t.pair.a for t in tests] == ["a", "b", "c"]
    # Sorted 0.01, 0.03, 0.04 -> x3, x2, x1, each at least the one before: 0.03, 0.06, 0.06.
    assert [t.p_adjusted for t in tests] == pytest.approx([0.03, 0.06, 0.06])
    assert [t.significant for t in tests] == [True, False, False]
    assert [t.significant for t in holm([pair(0.01), pair(0.04)], 0.1)] == [True, True]
    assert holm([], 0.05) == []


def test_all_pairs_of_four_models_in_order():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 10, 200)
    preds = {
        m: np.where(rng.random(200) < acc, labels, (labels + 1) % 10)
        for m, acc in (("w", 0.5), ("x", 0.6), ("y", 0.9), ("z", 0.95))
    }
    tests = all_pairs(preds, labels, 0.05)
    assert [(t.pair.a, t.pair.b) for t in tests] == [
        ("w", "x"),
        ("w", "y"),
        ("w", "z"),
        ("x", "y"),
        ("x", "z"),
        ("y", "z"),
    ]
    raw = [t.pair.p_value for t in tests]
    assert [t.p_adjusted for t in tests] == pytest.approx(holm_by_hand(raw))
    by_pair = {(t.pair.a, t.pair.b): t for t in tests}
    assert by_pair[("w", "z")].significant and by_pair[("w", "z")].pair.better == "z"
    for t in tests:
        assert t.pair.n == 200
        assert t.pair.difference == pytest.approx(
            (preds[t.pair.a] == labels).mean() - (preds[t.pair.b] == labels).mean()
        )


def holm_by_hand(p: list[float]) -> list[float]:
    """Holm's step-down adjustment, written out."""
    order = sorted(range(len(p)), key=p.__getitem__)
    out, running = [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        out[i] = running
    return out


# -- over seeds ------------------------------------------------------------------------------


def test_over_seeds_mean_spread_and_both_intervals():
    s = over_seeds("vgg", [0.50, 0.52, 0.51], chapter=0.9252)
    t = stats.t.ppf(0.975, 2)  # 4.3027
    assert s.model == "vgg" and s.accuracies == (0.50, 0.52, 0.51) and s.chapter == 0.9252
    assert s.mean == pytest.approx(0.51) and s.spread == pytest.approx(0.01)
    half = t * 0.01 / math.sqrt(3)
    assert (s.mean_interval.low, s.mean_interval.high) == pytest.approx((0.51 - half, 0.51 + half))
    half = t * 0.01 * math.sqrt(1 + 1 / 3)
    assert (s.run_interval.low, s.run_interval.high) == pytest.approx((0.51 - half, 0.51 + half))
    assert s.verdict == ABOVE  # the chapter's figure is above the range of one of our runs


def test_the_verdict_places_the_chapter_against_one_run_not_the_mean():
    values = [0.90, 0.91, 0.92, 0.90, 0.91, 0.92, 0.90, 0.91, 0.92, 0.91]
    s = over_seeds("m", values, chapter=0.925)
    assert s.mean_interval.high < 0.925 < s.run_interval.high  # outside the mean's, inside
    assert s.verdict == INSIDE
    assert over_seeds("m", values, chapter=0.85).verdict == BELOW
    assert over_seeds("m", values, chapter=s.run_interval.high).verdict == INSIDE


def test_identical_seeds_and_too_few_seeds():
    s = over_seeds("m", [0.8, 0.8], chapter=0.8)
    assert s.spread == 0 and s.run_interval == Interval(0.8, 0.8) and s.verdict == INSIDE
    assert MIN_SEEDS == 2
    with pytest.raises(ValueError, match="needs 2 seeds, not 1"):
        over_seeds("m", [0.8], chapter=0.8)


def test_intervals_over_seeds_stay_within_zero_and_one():
    s = over_seeds("pool_dropout", [0.33, 0.53, 0.43], chapter=0.8909)  # sd 0.1
    assert s.run_interval.low == 0.0 and s.mean_interval.low > 0.0
    assert s.run_interval.high == pytest.approx(0.43 + stats.t.ppf(0.975, 2) * 0.1 * 2 / 3**0.5)
    s = over_seeds("m", [0.98, 0.96, 0.97], chapter=0.9)  # sd 0.01
    assert s.run_interval.high == 1.0 and s.mean_interval.high < 1.0
    assert s.run_interval.low == pytest.approx(0.97 - stats.t.ppf(0.975, 2) * 0.01 * 2 / 3**0.5)


def test_a_wider_confidence_widens_both_intervals():
    narrow = over_seeds("m", [0.5, 0.6, 0.55], 0.5)
    wide = over_seeds("m", [0.5, 0.6, 0.55], 0.5, confidence=0.99)
    assert wide.mean_interval.low < narrow.mean_interval.low
    assert wide.run_interval.high > narrow.run_interval.high
