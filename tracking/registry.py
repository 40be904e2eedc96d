"""The model registry of one store: versions, aliases (champion, challenger), loading."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException

from fmnist.tracking.client import BoundedClient, fluent_uri
from fmnist.tracking.models import load_keras_model


@dataclass(frozen=True)
class Registry:
    """Registered models of the store at tracking_uri."""

    tracking_uri: str

    @property
    def client(self) -> BoundedClient:
        """A bounded client of this store."""
        return BoundedClient(self.tracking_uri)

    def alias_version(self, name: str, alias: str) -> Any | None:
        """The model version an alias points at, or None (no such model or alias)."""
        try:
            return self.client.get_model_version_by_alias(name, alias)
        except MlflowException:
            return None

    def register(self, model_uri: str, name: str, tags: Mapping[str, Any] | None = None) -> str:
        """Register a logged model as a new version of `name` (created if needed), tagged."""
        # register_model creates the registered model itself when it does not exist yet.
        with fluent_uri(self.tracking_uri):
            version = mlflow.register_model(
                model_uri, name, tags={k: str(v) for k, v in (tags or {}).items()}
            )
        return str(version.version)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Point an alias (champion, challenger) at a version."""
        self.client.set_registered_model_alias(name, alias, version)

    def versions_from_run(self, name: str, run_id: str) -> list[Any]:
        """The versions of `name` registered from a run's model, oldest first."""
        try:
            found = self.client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
        except MlflowException:
            return []
        return sorted(found, key=lambda v: int(v.version))

    def model_version(self, model_uri: str) -> Any:
        """The registry entry behind models:/NAME@ALIAS or models:/NAME/VERSION."""
        path = model_uri.removeprefix("models:/")
        if path == model_uri or not path:
            raise ValueError(f"{model_uri!r} is not a registry URI (models:/NAME@ALIAS)")
        if "@" in path:
            name, _, alias = path.partition("@")
            return self.client.get_model_version_by_alias(name, alias)
        name, _, version = path.rpartition("/")
        return self.client.get_model_version(name, version)

    def load_keras_model(self, model_uri: str) -> Any:
        """Load a Keras model registered in (or logged to) this store."""
        return load_keras_model(self.tracking_uri, model_uri)
