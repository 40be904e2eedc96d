"""The promotion gate: a failed, non-finite or below-the-floor model is never registered."""

from __future__ import annotations

import math

import pytest

from stages.champion import Candidate, decide, eligible

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
