"""The champion policy: which model a run puts forward, and whether it replaces the champion.

Plain logic over plain values: the promote task gathers the numbers (this run's table, the
current champion scored again on this run's test set, image by image) and applies the
decision.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fmnist.stages.significance import Paired

CHAMPION = "champion"
CHALLENGER = "challenger"

# tracking.promotion_rule: how a challenger must beat the champion on the same test images.
PAIRED = "paired"  # right on more of the images they disagree on, McNemar p < the level
ANY_IMPROVEMENT = "any_improvement"  # any higher accuracy (before issue 20; chance decides)
RULES = (PAIRED, ANY_IMPROVEMENT)


@dataclass(frozen=True)
class Verdict:
    """The challenger against the champion: the alias it gets, and why (parent-run tags)."""

    alias: str
    reason: str
    rule: str
    level: float
    comparison: Paired | None = None  # challenger (a) against champion (b), same images

    def tags(self) -> dict[str, str]:
        """promotion.{rule,level,outcome,why} and, with a champion, the paired comparison."""
        tags = {
            "promotion.rule": self.rule,
            "promotion.level": str(self.level),
            "promotion.outcome": self.alias,
            "promotion.why": self.reason,
        }
        c = self.comparison
        if c is not None:
            tags |= {
                "promotion.test_images": str(c.n),
                "promotion.difference": f"{c.difference:+.4f}",
                "promotion.difference_ci": f"[{c.interval.low:+.4f}, {c.interval.high:+.4f}]",
                "promotion.p_value": f"{c.p_value:.4g}",
                "promotion.discordant": f"challenger only {c.a_only}, champion only {c.b_only}",
            }
        return tags


def versus_champion(comparison: Paired | None, rule: str, level: float) -> Verdict:
    """Does the challenger replace the champion? comparison: the challenger (a) against the
    champion (b) on this run's test images; None when there is no champion yet.

    paired: only if the challenger is right on more of the images the two disagree on and
    McNemar's exact two-sided p-value is below `level` (a one-sided test at level / 2: a
    champion is not replaced on a coin's throw). any_improvement: any higher accuracy.
    """
    if rule not in RULES:
        raise ValueError(f"unknown promotion rule {rule!r}; known: {', '.join(RULES)}")
    if comparison is None:
        return Verdict(CHAMPION, "no champion yet: the challenger takes the alias", rule, level)
    c = comparison
    shown = (
        f"{c.difference:+.4f} (95 % CI {c.interval.low:+.4f} to {c.interval.high:+.4f}) on the "
        f"same {c.n} test images; right where the other is wrong: challenger {c.a_only}, "
        f"champion {c.b_only}; McNemar exact p = {c.p_value:.4g}"
    )
    if rule == ANY_IMPROVEMENT:
        alias = CHAMPION if c.a_only > c.b_only else CHALLENGER
        verb = "higher accuracy" if alias == CHAMPION else "no higher accuracy"
        return Verdict(alias, f"{verb} ({ANY_IMPROVEMENT}): {shown}", rule, level, c)
    if c.a_only <= c.b_only:
        why = "not better"
    elif c.p_value >= level:
        why = f"better, but not significantly at level {level}"
    else:
        return Verdict(CHAMPION, f"significantly better ({PAIRED}): {shown}", rule, level, c)
    return Verdict(CHALLENGER, f"{why} ({PAIRED}): {shown}", rule, level, c)


# -- the promotion gate (issue 9): what may be registered at all ---------------------------

FINISHED = "FINISHED"


@dataclass(frozen=True)
class Candidate:
    """One model of a run, as the promote step sees it (read back from its MLflow run)."""

    model: str
    test_accuracy: float | None
    status: str = FINISHED  # the run's end state: FINISHED, FAILED, ...
    test_loss: float | None = None
    losses: Sequence[float] = ()  # training loss per epoch (and val_loss, if given)
    failure: str | None = None  # the reason the run failed, when it did


@dataclass(frozen=True)
class Decision:
    """Whether this run registers a model, which one, and why (tags for the parent run)."""

    register: bool
    model: str | None
    reason: str
    usable: bool = False  # some model is eligible (the run produced something usable)

    def tags(self) -> dict[str, str]:
        """The decision as tags for the parent run: promotion.{decision,model,reason}."""
        return {
            "promotion.decision": "register" if self.register else "none",
            "promotion.model": self.model or "none",
            "promotion.reason": self.reason[:5000],
        }


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def eligible(candidate: Candidate, floor: float) -> tuple[bool, str]:
    """May this model be registered? (yes or no, and the reason in words)."""
    c = candidate
    if c.status != FINISHED or c.failure:
        return False, f"{c.model} failed ({c.status}): {c.failure or 'no reason recorded'}"
    if not _finite(c.test_accuracy):
        return False, f"{c.model} has no finite test accuracy ({c.test_accuracy})"
    bad = [v for v in c.losses if not math.isfinite(v)]
    if bad or (c.test_loss is not None and not math.isfinite(c.test_loss)):
        return False, f"{c.model} trained on a non-finite loss"
    if c.test_accuracy < floor:
        return False, (
            f"{c.model} scores {c.test_accuracy:.4f} on the test set, below the floor "
            f"{floor:.4f} (tracking.promotion_floor)"
        )
    return True, f"{c.model} scores {c.test_accuracy:.4f}, at or above the floor {floor:.4f}"


def decide(
    candidates: Sequence[Candidate], floor: float, failures: Mapping[str, str] | None = None
) -> Decision:
    """Pick the model to register, or none: the best eligible one of a run without failures.

    A run in which any model failed registers nothing (its comparison is incomplete), and a
    model that failed, trained on a non-finite loss or scores below `floor` is never picked.
    """
    failures = dict(failures or {})
    failures |= {c.model: c.failure or c.status for c in candidates if c.status != FINISHED}
    verdicts = [(c, *eligible(c, floor)) for c in candidates]
    ok = [(c, why) for c, good, why in verdicts if good]
    rejected = [why for _, good, why in verdicts if not good]
    if failures:
        listed = "; ".join(f"{m}: {why}" for m, why in failures.items())
        return Decision(False, None, f"nothing registered: model(s) failed ({listed})", bool(ok))
    if not candidates:
        return Decision(False, None, "nothing registered: no model finished")
    if not ok:
        return Decision(False, None, "nothing registered: " + "; ".join(rejected))
    best, why = ok[0]
    for c, reason in ok[1:]:  # strictly better only: the first listed wins a tie
        if c.test_accuracy > best.test_accuracy:
            best, why = c, reason
    others = f" (not eligible: {'; '.join(rejected)})" if rejected else ""
    return Decision(True, best.model, f"best eligible model: {why}{others}", usable=True)
