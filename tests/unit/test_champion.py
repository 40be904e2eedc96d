"""The champion policy: the best model of a run, and when it replaces the champion: only when
it is better on the same test images by a paired test (McNemar) at the configured level."""

from __future__ import annotations

import typing

import numpy as np
import pytest

from fmnist.conf import TrackingConfig
from fmnist.stages.champion import (
    ANY_IMPROVEMENT,
    CHALLENGER,
    CHAMPION,
    PAIRED,
    RULES,
    Candidate,
    Verdict,
    decide,
    versus_champion,
)
from fmnist.stages.significance import Interval, Paired, paired

LEVEL = 0.05


def finished(model: str, accuracy: float) -> Candidate:
    """A model that trained and was scored."""
    return Candidate(model, accuracy, losses=(1.0, 0.5))


def test_best_is_the_highest_test_accuracy():
    runs = [finished("conv_only", 0.80), finished("vgg", 0.90), finished("pool_dropout", 0.85)]
    assert decide(runs, floor=0.5).model == "vgg"


def test_a_tie_goes_to_the_first_listed():
    runs = [finished("conv_only", 0.8), finished("pool_dropout", 0.9), finished("vgg", 0.9)]
    assert decide(runs, floor=0.5).model == "pool_dropout"


def against(challenger_only: int, champion_only: int, both: int = 9000) -> Paired:
    """The challenger against the champion on 10,000 images, both right on `both`, each
    right alone on the given counts: built from predictions, as the promote task does."""
    neither = 10_000 - both - challenger_only - champion_only
    labels = np.arange(10_000) % 10
    wrong = (labels + 1) % 10
    kinds = np.repeat([0, 1, 2, 3], [both, challenger_only, champion_only, neither])
    challenger = np.where((kinds == 0) | (kinds == 1), labels, wrong)
    champion = np.where((kinds == 0) | (kinds == 2), labels, wrong)
    return paired("vgg_augmented", challenger, "champion v3", champion, labels)


def test_a_marginally_better_challenger_keeps_the_champion():
    # +0.1 pp on 10,000 images (60 against 50 of the images they disagree on): chance.
    v = versus_champion(against(60, 50), PAIRED, LEVEL)
    assert v.alias == CHALLENGER
    assert v.reason.startswith("better, but not significantly at level 0.05 (paired): +0.0010")
    tags = v.tags()
    assert tags["promotion.outcome"] == CHALLENGER
    assert tags["promotion.difference"] == "+0.0010"
    assert tags["promotion.discordant"] == "challenger only 60, champion only 50"
    assert float(tags["promotion.p_value"]) > 0.3


def test_a_clearly_better_challenger_replaces_the_champion():
    v = versus_champion(against(200, 80), PAIRED, LEVEL)  # +1.2 pp, p ~ 1e-12
    assert v.alias == CHAMPION
    assert v.reason.startswith("significantly better (paired): +0.0120")
    assert float(v.tags()["promotion.p_value"]) < 1e-9


@pytest.mark.parametrize(("mine", "theirs"), [(50, 50), (50, 60), (0, 300)])
def test_a_challenger_that_is_not_better_never_replaces(mine, theirs):
    for rule in RULES:
        v = versus_champion(against(mine, theirs), rule, LEVEL)
        assert v.alias == CHALLENGER, rule
    assert versus_champion(against(mine, theirs), PAIRED, LEVEL).reason.startswith("not better")


def test_any_improvement_is_the_old_rule():
    v = versus_champion(against(51, 50), ANY_IMPROVEMENT, LEVEL)
    assert v.alias == CHAMPION and v.reason.startswith("higher accuracy (any_improvement)")
    v = versus_champion(against(50, 50), ANY_IMPROVEMENT, LEVEL)
    assert v.alias == CHALLENGER and v.reason.startswith("no higher accuracy (any_improvement)")


def at(p_value: float) -> Paired:
    return Paired("new", "old", 900, 30, 10, 60, p_value, Interval(0.004, 0.036))


def test_the_level_is_strict_and_configurable():
    assert versus_champion(at(0.0499), PAIRED, 0.05).alias == CHAMPION
    assert versus_champion(at(0.05), PAIRED, 0.05).alias == CHALLENGER  # p < level, not <=
    assert versus_champion(at(0.0499), PAIRED, 0.01).alias == CHALLENGER
    assert "not significantly at level 0.01" in versus_champion(at(0.02), PAIRED, 0.01).reason


def test_no_champion_yet_and_an_unknown_rule():
    v = versus_champion(None, PAIRED, LEVEL)
    assert v == Verdict(CHAMPION, "no champion yet: the challenger takes the alias", PAIRED, 0.05)
    assert v.tags() == {
        "promotion.rule": "paired",
        "promotion.level": "0.05",
        "promotion.outcome": "champion",
        "promotion.why": "no champion yet: the challenger takes the alias",
    }
    with pytest.raises(ValueError, match=r"^unknown promotion rule 'coin'; known: paired, any_"):
        versus_champion(at(0.01), "coin", LEVEL)


def test_the_tags_say_why_in_full():
    v = versus_champion(at(0.0123456), PAIRED, 0.05)
    assert v.tags() == {
        "promotion.rule": "paired",
        "promotion.level": "0.05",
        "promotion.outcome": "champion",
        "promotion.why": v.reason,
        "promotion.test_images": "1000",
        "promotion.difference": "+0.0200",
        "promotion.difference_ci": "[+0.0040, +0.0360]",
        "promotion.p_value": "0.01235",
        "promotion.discordant": "challenger only 30, champion only 10",
    }
    assert v.reason == (
        "significantly better (paired): +0.0200 (95 % CI +0.0040 to +0.0360) on the same 1000 "
        "test images; right where the other is wrong: challenger 30, champion 10; McNemar "
        "exact p = 0.01235"
    )


def test_the_config_offers_the_rules_the_policy_knows():
    annotation = TrackingConfig.model_fields["promotion_rule"].annotation
    assert typing.get_args(annotation) == RULES
    assert TrackingConfig().promotion_rule == PAIRED
    assert TrackingConfig().significance_level == 0.05
