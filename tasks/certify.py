"""The certificate task: each model's test accuracy over seeds against the chapter
(stages/certificate.py), read back from the certificate's child runs, on the parent run
(certificate/certificate.{json,md,png}, metrics) and in Prefect's Artifacts tab."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from fmnist.stages.certificate import (
    certificate_figure,
    certificate_markdown,
    certificate_record,
    certificate_table,
    certify,
)
from fmnist.stages.models import get_spec
from fmnist.stages.significance import MIN_SEEDS
from fmnist.tasks import keys
from fmnist.tracking import Tracker

FOLDER = "certificate"


def run_key(model: str, seed: int) -> str:
    """A certificate's child run of one model and seed, under its parent: model-seedN (a
    folder name too: the run's checkpoints are kept under it)."""
    return f"{model}-seed{seed}"


def accuracies_of(
    runs: Mapping[str, Any], models: Sequence[str], seeds: Sequence[int]
) -> dict[str, list[float]]:
    """Model -> its test accuracy per seed that finished and was scored (in seed order).
    runs: run key -> MLflow run, as the tracking store has them."""
    out: dict[str, list[float]] = {}
    for model in models:
        values = []
        for seed in seeds:
            run = runs.get(run_key(model, seed))
            if run is not None and run.info.status == "FINISHED":
                accuracy = run.data.metrics.get(keys.TEST_ACCURACY)
                if accuracy is not None:
                    values.append(accuracy)
        out[model] = values
    return out


@task(name="certificate", cache_policy=NO_CACHE)
def certificate(
    tracker: Tracker,
    parent_run_id: str,
    runs: Mapping[str, Any],
    models: Sequence[str],
    seeds: Sequence[int],
    context: Mapping[str, Any],
) -> dict[str, Any]:
    """Write the certificate of the models that have two or more scored seeds; return it as
    JSON-able data (a model with fewer is listed under `not_certified`).
    runs: run key (run_key) -> MLflow run; context: what was run (profile, test set, ...)."""
    logger = get_run_logger()
    found = accuracies_of(runs, models, seeds)
    enough = {m: v for m, v in found.items() if len(v) >= MIN_SEEDS}
    rows = certify(enough, {m: get_spec(m).chapter_test_accuracy for m in enough})
    missing = {
        m: f"{len(v)} of {len(seeds)} seeds finished and were scored"
        for m, v in found.items()
        if m not in enough
    }
    record = certificate_record(rows, seeds, context, missing)
    heading = f"Certificate: profile {context.get('profile')}, {len(seeds)} seeds"
    markdown = certificate_markdown(rows, heading)
    tracker.log.dict(parent_run_id, record, f"{FOLDER}/certificate.json")
    tracker.log.text(parent_run_id, markdown, f"{FOLDER}/certificate.md")
    if rows:
        tracker.log.figure(
            parent_run_id, certificate_figure(rows, heading), f"{FOLDER}/certificate.png"
        )
    metrics, verdicts = {}, {}
    for r in rows:
        metrics |= {
            f"{keys.CERTIFICATE}.mean.{r.model}": r.mean,
            f"{keys.CERTIFICATE}.mean_low.{r.model}": r.mean_interval.low,
            f"{keys.CERTIFICATE}.mean_high.{r.model}": r.mean_interval.high,
            f"{keys.CERTIFICATE}.spread.{r.model}": r.spread,
        }
        verdicts[f"{keys.CERTIFICATE}.verdict.{r.model}"] = r.verdict
    tracker.log.metrics(parent_run_id, metrics)
    tracker.log.tags(parent_run_id, verdicts)
    table = certificate_table(rows)
    create_table_artifact(
        key="certificate",
        table=[
            {c: round(v, 4) if isinstance(v, float) else v for c, v in row.items()}
            for row in table.to_dict("records")
        ],
        description=f"{heading}: test accuracy over seeds against the chapter.",
    )
    create_markdown_artifact(key="certificate-md", markdown=markdown, description=heading)
    for model, why in record["not_certified"].items():
        logger.warning("%s not certified: %s", model, why)
    return record
