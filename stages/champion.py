"""The champion policy: which model a run puts forward, and whether it replaces the champion.

Plain logic over plain values: the promote task gathers the numbers (this run's table, the
current champion scored again on this run's test set) and applies the decision.
"""

from __future__ import annotations

import pandas as pd

CHAMPION = "champion"
CHALLENGER = "challenger"


def best_model(table: pd.DataFrame) -> str:
    """The model with the highest test accuracy (the first listed wins a tie)."""
    return str(table.loc[table["test_accuracy"].idxmax(), "model"])


def promotion(candidate_accuracy: float, champion_accuracy: float | None) -> str:
    """champion (none yet, or strictly better on the same test set) or challenger."""
    if champion_accuracy is None or candidate_accuracy > champion_accuracy:
        return CHAMPION
    return CHALLENGER
