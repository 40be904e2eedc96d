"""The promote-champion task: the promotion gate and the champion policy (stages/champion.py)
applied to this run's models, read back from the tracking store.

Idempotent: a run that is promoted again (it was killed between registering its model and
setting the alias, then resumed) reuses the version it registered instead of registering the
same model twice, and a version that is champion already is not put up against itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from fmnist.conf import TrackingConfig
from fmnist.stages.champion import CHAMPION, Candidate, decide, promotion
from fmnist.stages.evaluate import evaluate_model
from fmnist.stages.load import CLASS_NAMES, Dataset
from fmnist.tasks import keys
from fmnist.tracking import Tracker
from fmnist.tracking import keys as tracking_keys


def candidates_of(tracker: Tracker, runs: Mapping[str, Any]) -> list[Candidate]:
    """A run's models as the gate sees them: end state, test scores, training losses.
    runs: model name -> its MLflow run."""
    out = []
    for name, run in runs.items():
        losses = [
            *tracker.metric_history(run.info.run_id, keys.LOSS),
            *tracker.metric_history(run.info.run_id, keys.VAL_LOSS),
        ]
        out.append(
            Candidate(
                model=name,
                test_accuracy=run.data.metrics.get(keys.TEST_ACCURACY),
                status=run.info.status,
                test_loss=run.data.metrics.get(keys.TEST_LOSS),
                losses=losses,
                failure=run.data.tags.get(tracking_keys.FAILURE_REASON),
            )
        )
    return out


@task(name="promote-champion", cache_policy=NO_CACHE)
def promote(
    tracker: Tracker,
    parent_run_id: str,
    runs: Mapping[str, Any],
    dataset: Dataset,
    settings: TrackingConfig,
    *,
    failures: Mapping[str, str] | None = None,
    provenance: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Register the run's best eligible model (none if a model failed, trained on a non-finite
    loss or scores below the floor); it becomes `champion` only if it beats the current
    champion re-evaluated on this run's test set, else `challenger`. The decision and its
    reason go on the parent run; the model version is tagged with the run's provenance.

    runs: model name -> its MLflow run; settings: tracking.registered_model and
    tracking.promotion_floor.
    """
    logger = get_run_logger()
    registry, name = tracker.registry, settings.registered_model
    if name is None:
        raise ValueError("tracking.registered_model is null: nothing to register into")
    decision = decide(candidates_of(tracker, runs), settings.promotion_floor, failures)
    tracker.log.tags(parent_run_id, decision.tags())
    logger.info("promotion: %s", decision.reason)
    if not decision.register or decision.model is None:
        return decision.tags()
    best = decision.model
    child = runs[best]
    candidate = child.data.metrics[keys.TEST_ACCURACY]
    current = registry.alias_version(name, CHAMPION)
    earlier = registry.versions_from_run(name, child.info.run_id)
    if current is not None and any(v.version == current.version for v in earlier):
        # This very model is champion already (an earlier attempt got that far).
        version, alias, champion_accuracy = current.version, CHAMPION, None
        previous = "unchanged"
    else:
        champion_accuracy = None
        if current is not None:
            # Scored again here, on this run's test set: numbers from another test set (a
            # smoke subset, say) would not be comparable.
            model = registry.load_keras_model(f"models:/{name}@{CHAMPION}")
            champion_accuracy = evaluate_model(
                model, dataset.x_test, dataset.y_test, CLASS_NAMES
            ).accuracy
        alias = promotion(candidate, champion_accuracy)
        if earlier:  # registered before a kill: the same version, not a second one
            version = str(earlier[-1].version)
        else:
            version = registry.register(
                child.data.tags[tracking_keys.MODEL_URI],
                name,
                tags={**(provenance or {}), keys.MODEL: best, keys.PARENT_RUN_ID: parent_run_id},
            )
        registry.set_alias(name, alias, version)
        previous = current.version if current is not None else "none"
    decision_tags = decision.tags() | {
        "champion.model": best,
        "champion.registered_version": str(version),
        "champion.alias": alias,
        "champion.previous_version": str(previous),
    }
    tracker.log.tags(parent_run_id, decision_tags)
    metrics = {"champion.candidate_test_accuracy": candidate}
    if champion_accuracy is not None:
        metrics["champion.current_test_accuracy"] = champion_accuracy
    tracker.log.metrics(parent_run_id, metrics)
    shown = "none" if champion_accuracy is None else f"{champion_accuracy:.4f}"
    logger.info(
        "%s (test accuracy %.4f; current champion on the same test set: %s) is %s version %s "
        "with alias %s",
        best,
        candidate,
        shown,
        name,
        version,
        alias,
    )
    return decision_tags
