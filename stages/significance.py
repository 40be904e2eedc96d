"""Which differences in test accuracy are real: an interval on each accuracy, paired tests
between models scored on the same test images, and the math of the certificate over seeds.

- An accuracy's interval is Wilson's score interval (statsmodels' proportion_confint): right
  at the 0 and 1 ends and for small test sets, where the normal (Wald) interval is not.
- Two models on the same images are compared paired, image by image: McNemar's exact test
  (statsmodels) on the images exactly one of them gets right (the discordant pairs), two-
  sided; the difference in accuracy gets Newcombe's hybrid score interval for paired
  proportions (method 10 of Newcombe 1998, the square-and-add of the two Wilson intervals
  with the phi correlation; Fagerland, Lydersen and Laake 2014 recommend it). Holm's
  correction (statsmodels' multipletests) keeps the six pairs of four models at the level.
- Over seeds: the mean, Student's t interval of the mean, and the 95 % range of one more
  run (a prediction interval), against which a single published figure is placed.

Plain and pure: numpy, scipy, statsmodels; each result a small frozen dataclass.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

CONFIDENCE = 0.95  # of every interval here (the 95 %); tests take their own level

MIN_SEEDS = 2  # an interval over seeds needs two runs at least

# Where a published figure lies relative to an interval.
INSIDE, ABOVE, BELOW = "inside", "above", "below"


@dataclass(frozen=True)
class Interval:
    """A closed interval [low, high]."""

    low: float
    high: float

    def place(self, value: float) -> str:
        """inside, above or below the interval (its ends count as inside)."""
        if value > self.high:
            return ABOVE
        if value < self.low:
            return BELOW
        return INSIDE


def wilson(correct: int, n: int, confidence: float = CONFIDENCE) -> Interval:
    """Wilson's score interval for a proportion of `correct` out of `n`."""
    if n <= 0:
        raise ValueError(f"an interval needs at least one image, not {n}")
    low, high = proportion_confint(correct, n, alpha=1 - confidence, method="wilson")
    return Interval(float(low), float(high))


def correct(predicted: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per image: was it classified right? (predictions and labels in the same order)."""
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    if predicted.shape != labels.shape or predicted.ndim != 1:
        raise ValueError(
            f"{predicted.shape} predictions for {labels.shape} labels: not the same images"
        )
    return predicted == labels


# -- two models on the same images -----------------------------------------------------------


@dataclass(frozen=True)
class Paired:
    """Models a and b on the same n images: the 2x2 table, McNemar's test, the difference."""

    a: str
    b: str
    both: int  # images both get right
    a_only: int  # a right, b wrong
    b_only: int  # b right, a wrong
    neither: int
    p_value: float  # McNemar's exact test, two-sided
    interval: Interval  # of accuracy(a) - accuracy(b), Newcombe's hybrid score

    @property
    def n(self) -> int:
        """The number of images."""
        return self.both + self.a_only + self.b_only + self.neither

    @property
    def difference(self) -> float:
        """accuracy(a) - accuracy(b): only the discordant images differ."""
        return (self.a_only - self.b_only) / self.n

    @property
    def better(self) -> str | None:
        """The model right on more of the discordant images (None: as many each)."""
        if self.a_only == self.b_only:
            return None
        return self.a if self.a_only > self.b_only else self.b


def table(a_correct: np.ndarray, b_correct: np.ndarray) -> np.ndarray:
    """The paired 2x2 table [[both, a only], [b only, neither]] of two right/wrong vectors."""
    a, b = np.asarray(a_correct, bool), np.asarray(b_correct, bool)
    if a.shape != b.shape:
        raise ValueError(f"{a.shape} against {b.shape} images: not paired")
    return np.array([[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]])


def newcombe(counts: np.ndarray, confidence: float = CONFIDENCE) -> Interval:
    """Newcombe's hybrid score interval for p1 - p2 of a paired 2x2 table (method 10).

    p1 = (both + a only) / n and p2 = (both + b only) / n; their Wilson intervals are
    combined square-and-add, corrected for the correlation (phi) of the pairs.
    """
    (both, a_only), (b_only, neither) = (int(v) for v in counts[0]), (int(v) for v in counts[1])
    n = both + a_only + b_only + neither
    p1, p2 = (both + a_only) / n, (both + b_only) / n
    one, two = wilson(both + a_only, n, confidence), wilson(both + b_only, n, confidence)
    margins = (both + a_only) * (b_only + neither) * (both + b_only) * (a_only + neither)
    phi = (both * neither - a_only * b_only) / math.sqrt(margins) if margins else 0.0
    d1, u1 = p1 - one.low, one.high - p1  # how far each Wilson interval reaches either way
    d2, u2 = p2 - two.low, two.high - p2
    # x² - 2 phi x y + y², written as (x - y)² + 2 (1 - phi) x y: never negative (phi <= 1),
    # and never past -1 or +1 (each reach is at most d1 + u2 <= 1 + p1 - p2, and so on).
    down = math.sqrt((d1 - u2) ** 2 + 2 * (1 - phi) * d1 * u2)
    up = math.sqrt((u1 - d2) ** 2 + 2 * (1 - phi) * u1 * d2)
    return Interval(p1 - p2 - down, p1 - p2 + up)


def paired(
    a: str, a_predicted: np.ndarray, b: str, b_predicted: np.ndarray, labels: np.ndarray
) -> Paired:
    """Compare two models' predictions of the same labelled images, image by image."""
    counts = table(correct(a_predicted, labels), correct(b_predicted, labels))
    if counts.sum() == 0:
        raise ValueError("no images to compare")
    p_value = float(mcnemar(counts, exact=True).pvalue)
    (both, a_only), (b_only, neither) = counts.tolist()
    return Paired(a, b, both, a_only, b_only, neither, p_value, newcombe(counts))


@dataclass(frozen=True)
class PairTest:
    """One pair among several, with its Holm-adjusted p-value and verdict at the level."""

    pair: Paired
    p_adjusted: float
    significant: bool


def holm(pairs: Sequence[Paired], level: float) -> list[PairTest]:
    """Holm's step-down correction of the pairs' p-values, at family-wise level `level`."""
    if not pairs:
        return []
    reject, adjusted, _, _ = multipletests([p.p_value for p in pairs], alpha=level, method="holm")
    return [PairTest(p, float(adjusted[i]), bool(reject[i])) for i, p in enumerate(pairs)]


def all_pairs(
    predictions: Mapping[str, np.ndarray], labels: np.ndarray, level: float
) -> list[PairTest]:
    """Every pair of models (in the given order), compared paired and Holm-corrected."""
    pairs = [
        paired(a, predictions[a], b, predictions[b], labels)
        for a, b in itertools.combinations(predictions, 2)
    ]
    return holm(pairs, level)


# -- over seeds: the certificate -------------------------------------------------------------


@dataclass(frozen=True)
class OverSeeds:
    """One model's test accuracy over seeds, against the chapter's single figure."""

    model: str
    accuracies: tuple[float, ...]  # one per seed, in seed order
    mean: float
    spread: float  # the seed-to-seed standard deviation (n - 1 in the denominator)
    mean_interval: Interval  # Student's t interval of the mean
    run_interval: Interval  # where one more run falls: the t prediction interval
    chapter: float

    @property
    def verdict(self) -> str:
        """The chapter's figure inside, above or below the range of one run.

        The chapter reports one run, so it is placed against where one run of ours falls
        (the prediction interval), not against the mean's interval, which narrows with every
        seed added and would call any single run an outlier in the end.
        """
        return self.run_interval.place(self.chapter)


def over_seeds(
    model: str, accuracies: Sequence[float], chapter: float, confidence: float = CONFIDENCE
) -> OverSeeds:
    """Mean, spread and intervals of a model's accuracies over two or more seeds."""
    values = np.asarray(accuracies, dtype=np.float64)
    n = len(values)
    if n < MIN_SEEDS:
        raise ValueError(f"{model}: an interval over seeds needs {MIN_SEEDS} seeds, not {n}")
    mean, spread = float(values.mean()), float(values.std(ddof=1))
    t = float(stats.t.ppf((1 + confidence) / 2, n - 1))
    half_mean, half_run = t * spread / math.sqrt(n), t * spread * math.sqrt(1 + 1 / n)
    return OverSeeds(
        model=model,
        accuracies=tuple(float(v) for v in values),
        mean=mean,
        spread=spread,
        mean_interval=_accuracies(mean - half_mean, mean + half_mean),
        run_interval=_accuracies(mean - half_run, mean + half_run),
        chapter=chapter,
    )


def _accuracies(low: float, high: float) -> Interval:
    # Student's t knows no bounds; an accuracy lies in [0, 1] (few seeds, a wide spread).
    return Interval(max(low, 0.0), min(high, 1.0))
