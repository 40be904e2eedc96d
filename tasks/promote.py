"""The promote-champion task: the promotion gate and the champion policy (stages/champion.py)
applied to this run's models, read back from the tracking store.

The gate's comparison is paired: the current champion is scored again on this run's test
images, and its prediction of each image is set against the challenger's (kept with the
challenger's run, predictions.csv), so the two are compared on the very same data whatever
test set the champion's own run had; stored numbers of different data are never compared.

Idempotent: a run that is promoted again (it was killed between registering its model and
setting the alias, then resumed) reuses the version it registered instead of registering the
same model twice, and a version that is champion already is not put up against itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from fmnist.conf import TrackingConfig
from fmnist.stages.champion import CHAMPION, Candidate, Decision, decide, versus_champion
from fmnist.stages.evaluate import digest_of_test_set, evaluate_model
from fmnist.stages.load import CLASS_NAMES, Dataset
from fmnist.stages.significance import Paired, paired
from fmnist.tasks import keys
from fmnist.tasks.evaluate import read_predictions
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


@dataclass(frozen=True)
class Promotion:
    """What the promote step decided (the parent run's promotion.* and champion.* tags)."""

    decision: Decision
    tags: Mapping[str, str]

    @property
    def usable(self) -> bool:
        """Some model of the run is eligible: it finished, finite, at or above the floor."""
        return self.decision.usable


def note_on_test_set(dataset: Dataset, digest: str, champion_digest: str | None) -> str:
    """How the champion was compared: on this run's test images, and whether its own run was
    tested on the same ones (the promotion.test_set tag)."""
    here = f"scored on this run's {len(dataset.y_test)} test images (digest {digest[:12]})"
    if champion_digest is None:
        return f"champion {here}; its own run recorded no test-set digest"
    if champion_digest == digest:
        return f"champion {here}; its own run was tested on the same images"
    return (
        f"champion {here}; its own run was tested on other images (digest "
        f"{champion_digest[:12]}), whose score is not compared"
    )


def challenger_predictions(
    tracker: Tracker, child: Any, dataset: Dataset, digest: str
) -> np.ndarray:
    """The challenger's prediction of each of this run's test images: kept with its run, or
    (kept none, or of other images) scored again from its logged model."""
    kept = read_predictions(tracker, child)
    if kept is not None and kept.digest == digest and np.array_equal(kept.labels, dataset.y_test):
        return kept.predicted
    model = tracker.registry.load_keras_model(child.data.tags[tracking_keys.MODEL_URI])
    return evaluate_model(model, dataset.x_test, dataset.y_test, CLASS_NAMES).predicted


def against_champion(
    tracker: Tracker, name: str, current: Any, best: str, child: Any, dataset: Dataset
) -> tuple[Paired, str]:
    """The challenger against the champion, image by image on this run's test set, and the
    note on which test set that is."""
    digest = digest_of_test_set(dataset.x_test, dataset.y_test)
    model = tracker.registry.load_keras_model(f"models:/{name}@{CHAMPION}")
    champion = evaluate_model(model, dataset.x_test, dataset.y_test, CLASS_NAMES).predicted
    challenger = challenger_predictions(tracker, child, dataset, digest)
    comparison = paired(best, challenger, f"champion v{current.version}", champion, dataset.y_test)
    champion_digest = None
    if current.run_id:
        champion_digest = tracker.get_run(current.run_id).data.tags.get(keys.TEST_SET_DIGEST)
    return comparison, note_on_test_set(dataset, digest, champion_digest)


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
) -> Promotion:
    """Judge the run's models (none is eligible if it failed, trained on a non-finite loss or
    scores below the floor) and register the best eligible one of a run without failures. It
    becomes `champion` only if it beats the current champion, both scored on this run's test
    images, by the configured rule (tracking.promotion_rule, significance_level), else
    `challenger`. The decision and its reasons go on the parent run; the model version is
    tagged with the run's provenance. Nothing is registered when tracking.registered_model is
    null or models are not logged; the run is judged all the same (Promotion.usable).

    runs: model name -> its MLflow run.
    """
    logger = get_run_logger()
    registry, name = tracker.registry, settings.registered_model
    decision = decide(candidates_of(tracker, runs), settings.promotion_floor, failures)
    if decision.register and (name is None or not settings.log_models):
        off = "tracking.registered_model is null" if name is None else "models are not logged"
        decision = replace(decision, register=False, reason=f"{off}: {decision.reason}")
    tracker.log.tags(parent_run_id, decision.tags())
    logger.info("promotion: %s", decision.reason)
    if not decision.register or decision.model is None or name is None:
        return Promotion(decision, decision.tags())
    best = decision.model
    child = runs[best]
    candidate = child.data.metrics[keys.TEST_ACCURACY]
    current = registry.alias_version(name, CHAMPION)
    earlier = registry.versions_from_run(name, child.info.run_id)
    tags = decision.tags()
    metrics = {"champion.candidate_test_accuracy": candidate}
    if current is not None and any(v.version == current.version for v in earlier):
        # This very model is champion already (an earlier attempt got that far).
        version, alias, previous = current.version, CHAMPION, "unchanged"
    else:
        comparison, note = None, None
        if current is not None:
            comparison, note = against_champion(tracker, name, current, best, child, dataset)
            metrics["champion.current_test_accuracy"] = (
                comparison.both + comparison.b_only
            ) / comparison.n
        verdict = versus_champion(comparison, settings.promotion_rule, settings.significance_level)
        alias = verdict.alias
        tags |= verdict.tags() | ({"promotion.test_set": note} if note else {})
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
        logger.info("against the champion: %s", verdict.reason)
    tags |= {
        "champion.model": best,
        "champion.registered_version": str(version),
        "champion.alias": alias,
        "champion.previous_version": str(previous),
    }
    tracker.log.tags(parent_run_id, tags)
    tracker.log.metrics(parent_run_id, metrics)
    logger.info(
        "%s (test accuracy %.4f) is %s version %s with alias %s",
        best,
        candidate,
        name,
        version,
        alias,
    )
    return Promotion(decision, tags)
