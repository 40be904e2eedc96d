"""The compare task: the models side by side (stages/compare.py) on the parent run and in
Prefect's Artifacts tab."""

from __future__ import annotations

from typing import Any

import pandas as pd
from fmnist.stages.compare import (
    ModelResult,
    accuracy_bars,
    comparison_table,
    to_markdown,
    val_accuracy_overlay,
)
from fmnist.stages.models import get_spec
from fmnist.tracking import Tracker
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE


def results_of(tracker: Tracker, parent_run_id: str, models: list[str]) -> list[ModelResult]:
    """The trained models under a parent run, read back from the store, in `models` order.

    Inline and worker training both log to the store, so this reads both the same way.
    """
    runs = tracker.child_runs(parent_run_id)
    results = []
    for name in models:
        run = runs.get(name)
        if run is None or "test_accuracy" not in run.data.metrics:
            continue  # failed: nothing to compare
        p, m = run.data.params, run.data.metrics
        results.append(
            ModelResult(
                model=name,
                params=int(p["param_count"]),
                train_samples=int(p["train_samples"]),
                epochs=int(p["train.epochs"]),
                test_accuracy=m["test_accuracy"],
                chapter_accuracy=get_spec(name).chapter_test_accuracy,
                training_seconds=m.get("training_seconds", float("nan")),
                samples_per_second=m.get("samples_per_second", float("nan")),
                val_accuracy=tracker.metric_history(run.info.run_id, "val_accuracy"),
            )
        )
    return results


@task(name="compare", cache_policy=NO_CACHE)
def compare(tracker: Tracker, parent_run_id: str, models: list[str], links: str) -> pd.DataFrame:
    """Log the comparison table and figures on the parent run; publish the table (and the
    MLflow links) as Prefect artifacts."""
    results = results_of(tracker, parent_run_id, models)
    table = comparison_table(results)
    tracker.log_text(parent_run_id, table.to_csv(index=False), "comparison/comparison.csv")
    markdown = to_markdown(table)
    tracker.log_text(parent_run_id, markdown, "comparison/comparison.md")
    if len(table):
        tracker.log_figure(
            parent_run_id, accuracy_bars(table), "comparison/test_accuracy_vs_chapter.png"
        )
        tracker.log_figure(
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
