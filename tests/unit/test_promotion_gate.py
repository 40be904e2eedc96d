"""The promotion gate: a failed, non-finite or below-the-floor model is never registered."""

from __future__ import annotations

import math

import pytest

from fmnist.stages.champion import Candidate, Decision, decide, eligible

FLOOR = 0.80


def good(name: str, acc: float) -> Candidate:
    return Candidate(name, acc, test_loss=0.4, losses=[0.9, 0.5])


def test_the_best_eligible_model_is_registered():
    d = decide([good("conv_only", 0.85), good("vgg", 0.90), good("pool_dropout", 0.88)], FLOOR)
    assert (d.register, d.model) == (True, "vgg")
    assert "vgg scores 0.9000" in d.reason
    assert d.tags() == {
        "promotion.decision": "register",
        "promotion.model": "vgg",
        "promotion.reason": d.reason,
    }


def test_a_tie_goes_to_the_first_listed():
    assert decide([good("a", 0.9), good("b", 0.9)], FLOOR).model == "a"


@pytest.mark.parametrize(
    ("candidate", "why"),
    [
        (Candidate("m", 0.95, status="FAILED", failure="NonFiniteLoss: nan"), "m failed"),
        (Candidate("m", math.nan), "no finite test accuracy"),
        (Candidate("m", None), "no finite test accuracy"),
        (Candidate("m", 0.95, losses=[0.5, math.nan]), "non-finite loss"),
        (Candidate("m", 0.95, losses=[0.5, math.inf]), "non-finite loss"),
        (Candidate("m", 0.95, test_loss=math.nan), "non-finite loss"),
        (Candidate("m", 0.79), "below the floor 0.8000"),
    ],
)
def test_ineligible_models(candidate, why):
    ok, reason = eligible(candidate, FLOOR)
    assert not ok and why in reason


def test_the_floor_itself_is_eligible():
    assert eligible(good("m", FLOOR), FLOOR)[0]


def test_a_better_but_ineligible_model_is_passed_over_and_named():
    d = decide([good("a", 0.85), Candidate("b", 0.99, losses=[math.nan])], FLOOR)
    assert (d.register, d.model) == (True, "a")
    assert "b trained on a non-finite loss" in d.reason


def test_nothing_registered_when_all_are_below_the_floor():
    d = decide([good("a", 0.10), good("b", 0.106)], FLOOR)
    assert not d.register and d.model is None
    assert d.tags()["promotion.decision"] == "none"
    assert "a scores 0.1000" in d.reason and "b scores 0.1060" in d.reason


def test_any_failure_registers_nothing():
    failed = Candidate("b", None, status="FAILED", failure="NonFiniteLoss: b: non-finite loss")
    d = decide([good("a", 0.95), failed], FLOOR)
    assert not d.register
    assert "b: NonFiniteLoss" in d.reason
    d = decide([good("a", 0.95)], FLOOR, failures={"c": "RuntimeError: boom"})
    assert not d.register and "c: RuntimeError: boom" in d.reason


def test_no_candidates():
    assert not decide([], FLOOR).register


# The decision is what the parent run shows people (tags): its words are pinned whole.


def test_a_failed_model_without_a_recorded_reason_says_so():
    c = Candidate("m", None, status="KILLED")
    assert eligible(c, FLOOR) == (False, "m failed (KILLED): no reason recorded")


def test_a_finished_run_with_a_failure_is_not_eligible():
    # A run can end FINISHED and still carry the reason it failed (a guard, a gate).
    c = Candidate("m", 0.95, failure="NonFiniteLoss: nan")
    assert eligible(c, FLOOR) == (False, "m failed (FINISHED): NonFiniteLoss: nan")


def test_failures_are_listed_in_the_reason_and_nothing_is_registered():
    d = decide(
        [good("a", 0.95), Candidate("b", None, status="FAILED", failure="Boom: b")],
        FLOOR,
        failures={"c": "RuntimeError: c"},
    )
    assert d == Decision(
        False,
        None,
        "nothing registered: model(s) failed (c: RuntimeError: c; b: Boom: b)",
        usable=True,  # a is usable: the run fails for its failures, not for want of a model
    )
    assert d.register is False


def test_no_candidates_is_a_decision_with_its_reason():
    d = decide([], FLOOR)
    assert d == Decision(False, None, "nothing registered: no model finished")
    assert d.register is False and d.usable is False


# Usable (issue 17): a run none of whose models is eligible produced nothing usable, and
# the pipeline fails it (NoUsableModel); one whose best does not beat the champion did.


def test_a_run_with_an_eligible_model_is_usable():
    d = decide([good("a", 0.85), good("b", 0.5)], FLOOR)
    assert d.usable is True and d.register is True


@pytest.mark.parametrize(
    "candidates",
    [
        [good("a", 0.10), good("b", 0.79)],  # all below the floor
        [Candidate("a", 0.95, losses=[math.nan]), good("b", 0.2)],  # diverged, or below
        [Candidate("a", math.nan)],
    ],
)
def test_a_run_with_no_eligible_model_is_not_usable(candidates):
    d = decide(candidates, FLOOR)
    assert d.usable is False and d.register is False


def test_a_run_whose_models_all_failed_is_not_usable():
    failed = Candidate("a", None, status="FAILED", failure="NonFiniteLoss: nan")
    assert decide([failed], FLOOR).usable is False
    assert decide([good("b", 0.5)], FLOOR, failures={"a": "RuntimeError"}).usable is False


def test_all_rejected_lists_every_reason():
    d = decide([good("a", 0.10), good("b", 0.20)], FLOOR)
    assert d == Decision(
        False,
        None,
        "nothing registered: "
        "a scores 0.1000 on the test set, below the floor 0.8000 (tracking.promotion_floor); "
        "b scores 0.2000 on the test set, below the floor 0.8000 (tracking.promotion_floor)",
    )
    assert d.register is False


def test_the_reason_of_a_clean_pick_names_no_rejects():
    d = decide([good("a", 0.85), good("b", 0.9)], FLOOR)
    assert d.reason == "best eligible model: b scores 0.9000, at or above the floor 0.8000"


def test_rejects_are_listed_after_the_pick():
    d = decide([good("a", 0.85), good("b", 0.5), good("c", 0.6)], FLOOR)
    assert d.reason == (
        "best eligible model: a scores 0.8500, at or above the floor 0.8000 (not eligible: "
        "b scores 0.5000 on the test set, below the floor 0.8000 (tracking.promotion_floor); "
        "c scores 0.6000 on the test set, below the floor 0.8000 (tracking.promotion_floor))"
    )


def test_tags_of_no_decision_and_a_long_reason():
    d = Decision(False, None, "x" * 6000)
    tags = d.tags()
    assert tags == {
        "promotion.decision": "none",
        "promotion.model": "none",
        "promotion.reason": "x" * 5000,  # cut, well within MLflow 3's 8,000 characters a tag
    }
