"""The champion policy: the best model of a run, and when it replaces the champion."""

from __future__ import annotations

import pandas as pd
import pytest

from stages.champion import CHALLENGER, CHAMPION, best_model, promotion


def table(rows: list[tuple[str, float, float]]) -> pd.DataFrame:
    """A comparison table with the columns the policy reads, and a decoy column."""
    return pd.DataFrame(rows, columns=["model", "test_accuracy", "best_val_accuracy"])


def test_best_is_the_highest_test_accuracy_not_the_highest_validation():
    # The decoy column ranks the other way round: a policy reading it would pick conv_only.
    t = table([("conv_only", 0.80, 0.99), ("vgg", 0.90, 0.50), ("pool_dropout", 0.85, 0.70)])
    assert best_model(t) == "vgg"


def test_a_tie_goes_to_the_first_listed():
    t = table([("conv_only", 0.80, 0.1), ("pool_dropout", 0.90, 0.2), ("vgg", 0.90, 0.3)])
    assert best_model(t) == "pool_dropout"


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


def test_the_best_model_is_named_as_a_plain_string():
    t = table([("conv_only", 0.80, 0.1), ("vgg", 0.90, 0.2)])
    assert type(best_model(t)) is str and best_model(t) == "vgg"


def test_a_candidate_that_ties_keeps_the_champion():
    assert promotion(0.9, 0.9) == CHALLENGER
    assert promotion(0.0, 0.0) == CHALLENGER  # a champion of 0 is still a champion
