"""The champion policy: the best model of a run, and when it replaces the champion."""

from __future__ import annotations

import pytest

from fmnist.stages.champion import CHALLENGER, CHAMPION, Candidate, decide, promotion


def finished(model: str, accuracy: float) -> Candidate:
    """A model that trained and was scored."""
    return Candidate(model, accuracy, losses=(1.0, 0.5))


def test_best_is_the_highest_test_accuracy():
    runs = [finished("conv_only", 0.80), finished("vgg", 0.90), finished("pool_dropout", 0.85)]
    assert decide(runs, floor=0.5).model == "vgg"


def test_a_tie_goes_to_the_first_listed():
    runs = [finished("conv_only", 0.8), finished("pool_dropout", 0.9), finished("vgg", 0.9)]
    assert decide(runs, floor=0.5).model == "pool_dropout"


@pytest.mark.parametrize(
    ("candidate", "champion", "alias"),
    [
        (0.5, None, CHAMPION),  # no champion yet: the first candidate takes it
        (0.91, 0.90, CHAMPION),  # strictly better
        (0.90, 0.90, CHALLENGER),  # a tie keeps the champion
        (0.80, 0.90, CHALLENGER),
    ],
)
def test_champion_moves_only_when_beaten(candidate, champion, alias):
    assert promotion(candidate, champion) == alias


def test_a_candidate_that_ties_keeps_the_champion():
    assert promotion(0.9, 0.9) == CHALLENGER
    assert promotion(0.0, 0.0) == CHALLENGER  # a champion of 0 is still a champion
