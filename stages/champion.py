"""The champion policy: which model a run puts forward, and whether it replaces the champion.

Plain logic over plain values: the promote task gathers the numbers (this run's table, the
current champion scored again on this run's test set) and applies the decision.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

CHAMPION = "champion"
CHALLENGER = "challenger"


def promotion(candidate_accuracy: float, champion_accuracy: float | None) -> str:
    """champion (none yet, or strictly better on the same test set) or challenger."""
    if champion_accuracy is None or candidate_accuracy > champion_accuracy:
        return CHAMPION
    return CHALLENGER


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
    if failures:
        listed = "; ".join(f"{m}: {why}" for m, why in failures.items())
        return Decision(False, None, f"nothing registered: model(s) failed ({listed})")
    if not candidates:
        return Decision(False, None, "nothing registered: no model finished")
    verdicts = [(c, *eligible(c, floor)) for c in candidates]
    ok = [(c, why) for c, good, why in verdicts if good]
    rejected = [why for _, good, why in verdicts if not good]
    if not ok:
        return Decision(False, None, "nothing registered: " + "; ".join(rejected))
    best, why = ok[0]
    for c, reason in ok[1:]:  # strictly better only: the first listed wins a tie
        if c.test_accuracy > best.test_accuracy:
            best, why = c, reason
    others = f" (not eligible: {'; '.join(rejected)})" if rejected else ""
    return Decision(True, best.model, f"best eligible model: {why}{others}")
