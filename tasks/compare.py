"""The compare task: the models side by side (stages/compare.py) on the parent run and in
Prefect's Artifacts tab."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from fmnist.stages.compare import (
    ModelResult,
    accuracy_bars,
    comparison_table,
    to_markdown,
    val_accuracy_overlay,
)
from fmnist.stages.models import get_spec
from fmnist.tasks import keys
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
            )
        )
    return results


@task(name="compare", cache_policy=NO_CACHE)
def compare(
    tracker: Tracker,
    parent_run_id: str,
    runs: Mapping[str, Any],
    models: list[str],
    links: str,
) -> pd.DataFrame:
    """Log the comparison table and figures on the parent run; publish the table (and the
    MLflow links) as Prefect artifacts. runs: model name -> its MLflow run."""
    results = results_of(tracker, runs, models)
    table = comparison_table(results)
    tracker.log.text(parent_run_id, table.to_csv(index=False), "comparison/comparison.csv")
    markdown = to_markdown(table)
    tracker.log.text(parent_run_id, markdown, "comparison/comparison.md")
    if len(table):
        tracker.log.figure(
            parent_run_id, accuracy_bars(table), "comparison/test_accuracy_vs_chapter.png"
        )
        tracker.log.figure(
            parent_run_id, val_accuracy_overlay(results), "comparison/val_accuracy.png"
        )
    create_table_artifact(
        key="model-comparison",
        table=[{c: _plain(v) for c, v in row.items()} for row in table.to_dict("records")],
        description="The four models against the chapter (test set accuracy).",
    )
    create_markdown_artifact(
        key="mlflow-run",
        markdown=f"## Comparison\n\n{markdown}\n## MLflow\n\n{links}",
        description="Where this run's models are tracked.",
    )
    return table


def _plain(value: Any) -> Any:
    # numpy scalars do not serialise into Prefect's artifact JSON; 0.4860000014305115 reads
    # worse than 0.486 in the dashboard's table.
    value = value.item() if hasattr(value, "item") else value
    return round(value, 4) if isinstance(value, float) else value
