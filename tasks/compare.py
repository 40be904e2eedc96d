"""The compare task: the models side by side (stages/compare.py), each accuracy with its 95 %
interval, and every pair tested paired on the same test images (stages/significance.py), on
the parent run and in Prefect's Artifacts tab."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from fmnist.stages.compare import (
    ModelResult,
    accuracy_bars,
    comparison_table,
    pairs_table,
    to_markdown,
    val_accuracy_overlay,
)
from fmnist.stages.models import get_spec
from fmnist.stages.significance import PairTest, all_pairs
from fmnist.tasks import keys
from fmnist.tasks.evaluate import read_predictions
from fmnist.tracking import Tracker


def results_of(tracker: Tracker, runs: Mapping[str, Any], models: list[str]) -> list[ModelResult]:
    """The trained models among a parent's runs (model name -> MLflow run), in `models` order.

    Inline and worker training both log to the store, so this reads both the same way.
    """
    results = []
    for name in models:
        run = runs.get(name)
        if run is None or keys.TEST_ACCURACY not in run.data.metrics:
            continue  # failed: nothing to compare
        p, m = run.data.params, run.data.metrics
        results.append(
            ModelResult(
                model=name,
                params=int(p[keys.PARAM_COUNT]),
                train_samples=int(p[keys.TRAIN_SAMPLES]),
                epochs=int(p["train.epochs"]),
                test_accuracy=m[keys.TEST_ACCURACY],
                chapter_accuracy=get_spec(name).chapter_test_accuracy,
                training_seconds=m.get(keys.TRAINING_SECONDS, float("nan")),
                samples_per_second=m.get(keys.SAMPLES_PER_SECOND, float("nan")),
                val_accuracy=tracker.metric_history(run.info.run_id, keys.VAL_ACCURACY),
                ci_low=m.get(keys.TEST_ACCURACY_CI_LOW, float("nan")),
                ci_high=m.get(keys.TEST_ACCURACY_CI_HIGH, float("nan")),
            )
        )
    return results


def pair_tests(
    tracker: Tracker, runs: Mapping[str, Any], models: list[str], level: float
) -> list[PairTest]:
    """Every pair of the models that kept predictions of the same test images, compared
    image by image (McNemar, Holm-corrected at `level`)."""
    logger = get_run_logger()
    kept = {m: read_predictions(tracker, runs[m]) for m in models if m in runs}
    kept = {m: p for m, p in kept.items() if p is not None}
    if not kept:
        return []
    first = next(iter(kept.values()))
    same = {
        m: p
        for m, p in kept.items()
        if p.digest == first.digest and np.array_equal(p.labels, first.labels)
    }
    if left_out := sorted(set(models) - set(same)):
        logger.warning("not paired (no predictions of this test set): %s", ", ".join(left_out))
    return all_pairs({m: p.predicted for m, p in same.items()}, first.labels, level)


@task(name="compare", cache_policy=NO_CACHE)
def compare(
    tracker: Tracker,
    parent_run_id: str,
    runs: Mapping[str, Any],
    models: list[str],
    links: str,
    level: float = 0.05,
) -> pd.DataFrame:
    """Log the comparison table (with 95 % intervals), the paired tests and the figures on the
    parent run; publish both tables (and the MLflow links) as Prefect artifacts.
    runs: model name -> its MLflow run; level: of the paired tests, after Holm's correction."""
    results = results_of(tracker, runs, models)
    table = comparison_table(results)
    tracker.log.text(parent_run_id, table.to_csv(index=False), "comparison/comparison.csv")
    markdown = to_markdown(table)
    tracker.log.text(parent_run_id, markdown, "comparison/comparison.md")
    pairs = pairs_table(pair_tests(tracker, runs, models, level))
    tracker.log.text(parent_run_id, pairs.to_csv(index=False), "comparison/pairs.csv")
    pairs_md = to_markdown(pairs)
    tracker.log.text(parent_run_id, pairs_md, "comparison/pairs.md")
    if len(table):
        intervals = {}
        for r in results:  # beside the parent's test_accuracy.<model>
            if not np.isnan(r.ci_low):
                intervals[f"{keys.TEST_ACCURACY_CI_LOW}.{r.model}"] = r.ci_low
                intervals[f"{keys.TEST_ACCURACY_CI_HIGH}.{r.model}"] = r.ci_high
        tracker.log.metrics(parent_run_id, intervals)
        tracker.log.figure(
            parent_run_id, accuracy_bars(table), "comparison/test_accuracy_vs_chapter.png"
        )
        tracker.log.figure(
            parent_run_id, val_accuracy_overlay(results), "comparison/val_accuracy.png"
        )
    create_table_artifact(
        key="model-comparison",
        table=_records(table),
        description="The four models against the chapter (test set accuracy, 95 % interval).",
    )
    create_table_artifact(
        key="model-pairs",
        table=_records(pairs),
        description=f"Each pair on the same test images: difference (a - b) with its 95 % "
        f"interval, images only a / only b got right, McNemar's exact p, Holm's p, "
        f"significant at {level}.",
    )
    paired = (
        f"Paired on the same test images (McNemar's exact test, Holm-corrected, level "
        f"{level}; a_only / b_only: images only that model got right):\n\n{pairs_md}"
    )
    create_markdown_artifact(
        key="mlflow-run",
        markdown=f"## Comparison\n\n{markdown}\n{paired}\n## MLflow\n\n{links}",
        description="Where this run's models are tracked.",
    )
    return table


def _records(table: pd.DataFrame) -> list[dict[str, Any]]:
    return [{c: _plain(v) for c, v in row.items()} for row in table.to_dict("records")]


def _plain(value: Any) -> Any:
    # numpy scalars do not serialise into Prefect's artifact JSON; 0.4860000014305115 reads
    # worse than 0.486 in the dashboard's table. A p-value keeps 4 significant digits.
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, float) and 0 < abs(value) < 1e-3:
        return float(f"{value:.4g}")
    return round(value, 4) if isinstance(value, float) else value
