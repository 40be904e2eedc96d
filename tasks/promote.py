"""The promote-champion task: the promotion gate and the champion policy (stages/champion.py)
applied to this run's models, read back from the tracking store."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fmnist.stages.champion import CHAMPION, Candidate, decide, promotion
from fmnist.stages.evaluate import evaluate_model
from fmnist.stages.load import CLASS_NAMES, Dataset
from fmnist.tracking import Tracker
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE


def candidates_of(tracker: Tracker, parent_run_id: str, models: list[str]) -> list[Candidate]:
    """This run's models as the gate sees them: end state, test scores, training losses."""
    runs = tracker.child_runs(parent_run_id)
    out = []
    for name in models:
        run = runs.get(name)
        if run is None:
            continue
        losses = [
            *tracker.metric_history(run.info.run_id, "loss"),
            *tracker.metric_history(run.info.run_id, "val_loss"),
        ]
        out.append(
            Candidate(
                model=name,
                test_accuracy=run.data.metrics.get("test_accuracy"),
                status=run.info.status,
                test_loss=run.data.metrics.get("test_loss"),
                losses=losses,
                failure=run.data.tags.get("failure_reason"),
            )
        )
    return out


@task(name="promote-champion", cache_policy=NO_CACHE)
def promote(
    tracker: Tracker,
    parent_run_id: str,
    models: list[str],
    dataset: Dataset,
    registry: str,
    floor: float,
    failures: Mapping[str, str] | None = None,
    provenance: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Register the run's best eligible model (none if a model failed, trained on a non-finite
    loss or scores below `floor`); it becomes `champion` only if it beats the current champion
    re-evaluated on this run's test set, else `challenger`. The decision and its reason go on
    the parent run; the model version is tagged with the run's provenance."""
    logger = get_run_logger()
    decision = decide(candidates_of(tracker, parent_run_id, models), floor, failures)
    tracker.set_tags(parent_run_id, decision.tags())
    logger.info("promotion: %s", decision.reason)
    if not decision.register or decision.model is None:
        return decision.tags()
    best = decision.model
    child = tracker.child_runs(parent_run_id)[best]
    model_uri = child.data.tags.get("model_uri")
    candidate = child.data.metrics["test_accuracy"]
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
    decision_tags = decision.tags() | {
        "champion.model": best,
        "champion.registered_version": version,
        "champion.alias": alias,
        "champion.previous_version": current.version if current is not None else "none",
    }
    tracker.set_tags(parent_run_id, decision_tags)
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
    return decision_tags
