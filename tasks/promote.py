"""The promote-champion task: register the run's best model and move the aliases by the
champion policy (stages/champion.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from stages.champion import CHAMPION, best_model, promotion
from stages.evaluate import evaluate_model
from stages.load import CLASS_NAMES, Dataset
from tracking import Tracker


@task(name="promote-champion", cache_policy=NO_CACHE)
def promote(
    tracker: Tracker,
    parent_run_id: str,
    table: pd.DataFrame,
    dataset: Dataset,
    registry: str,
    provenance: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Register the run's best model; it becomes `champion` only if it beats the current
    champion re-evaluated on this run's test set, else `challenger`. The model version is
    tagged with the run's provenance (commit, flow run, config and dataset digests)."""
    logger = get_run_logger()
    best = best_model(table)
    child = tracker.child_runs(parent_run_id)[best]
    model_uri = child.data.tags.get("model_uri")
    if model_uri is None:
        logger.warning(
            "%s was not logged as a model (tracking.log_models): nothing registered", best
        )
        return {}
    candidate = float(table.loc[table["model"] == best, "test_accuracy"].iloc[0])
    current = tracker.alias_version(registry, CHAMPION)
    champion_accuracy = None
    if current is not None:
        # Scored again here, on this run's test set: numbers from another test set (a smoke
        # subset, say) would not be comparable.
        model = tracker.load_keras_model(f"models:/{registry}@{CHAMPION}")
        champion_accuracy = evaluate_model(
            model, dataset.x_test, dataset.y_test, CLASS_NAMES
        ).accuracy
    alias = promotion(candidate, champion_accuracy)
    version = tracker.register(
        model_uri,
        registry,
        tags={**(provenance or {}), "model": best, "parent_run_id": parent_run_id},
    )
    tracker.set_alias(registry, alias, version)
    decision = {
        "champion.model": best,
        "champion.registered_version": version,
        "champion.alias": alias,
        "champion.previous_version": current.version if current is not None else "none",
    }
    tracker.set_tags(parent_run_id, decision)
    tracker.log_metrics(
        parent_run_id,
        {"champion.candidate_test_accuracy": candidate}
        | (
            {"champion.current_test_accuracy": champion_accuracy}
            if champion_accuracy is not None
            else {}
        ),
    )
    shown = "none" if champion_accuracy is None else f"{champion_accuracy:.4f}"
    logger.info(
        "%s (test accuracy %.4f; current champion on the same test set: %s) registered as "
        "%s version %s with alias %s",
        best,
        candidate,
        shown,
        registry,
        version,
        alias,
    )
    return decision
