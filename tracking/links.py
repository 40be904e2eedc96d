"""Links into the MLflow UI for an experiment's runs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import quote


@dataclass(frozen=True)
class Links:
    """URLs of one experiment's pages in the MLflow UI at `ui`."""

    ui: str
    experiment_id: str

    @property
    def _base(self) -> str:
        return self.ui.rstrip("/")

    def experiment(self) -> str:
        """The experiment's runs list (MLflow 3 otherwise opens on the GenAI overview)."""
        return f"{self._base}/#/experiments/{self.experiment_id}/runs"

    def run(self, run_id: str) -> str:
        """A run's page."""
        return f"{self._base}/#/experiments/{self.experiment_id}/runs/{run_id}"

    def compare(self, run_ids: list[str]) -> str:
        """The compare page for the given runs."""
        runs = quote(json.dumps(run_ids, separators=(",", ":")))
        exps = quote(json.dumps([self.experiment_id], separators=(",", ":")))
        return f"{self._base}/#/compare-runs?runs={runs}&experiments={exps}"
