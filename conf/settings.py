"""Settings from the environment, read when asked for (never at import), in one place.

`settings()` reads the variables the project honours; `apply_process_defaults()` sets the
defaults a process that runs the pipeline needs, before Keras, TensorFlow or Prefect is
imported, without overriding what the user set.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# Defaults for a process that trains or orchestrates; a value already in the environment wins.
# (The Keras backend and its settings are stages/backend.py's: the profile's keras_backend,
# unless KERAS_BACKEND says otherwise.)
PROCESS_DEFAULTS: dict[str, str] = {
    # The ephemeral Prefect server's telemetry heartbeat races the flow for its SQLite file
    # ("database is locked" tracebacks); it sends nothing useful offline anyway.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # Prefect's ephemeral API server gets 20 s to start by default; a busy 2-core machine
    # (another run training beside it) needs more, or the run fails before it starts.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


class Settings(BaseSettings):
    """The environment variables the project reads."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    mlflow_tracking_uri: str | None = Field(
        None,
        validation_alias="MLFLOW_TRACKING_URI",
        description="Wins over the profile's tracking.tracking_uri.",
    )

    dataset_cache: str | None = Field(
        None,
        validation_alias="FMNIST_DATASET_CACHE",
        description="Where a machine keeps the prepared datasets its training runs fetched "
        "(dataset-<sha256>.npz); default: $XDG_CACHE_HOME/fmnist/datasets (~/.cache/...).",
    )

    def dataset_cache_dir(self) -> Path:
        """FMNIST_DATASET_CACHE, else the user's cache folder."""
        if self.dataset_cache:
            return Path(self.dataset_cache).expanduser()
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(xdg) / "fmnist" / "datasets"


def settings() -> Settings:
    """The settings as the environment says now."""
    return Settings()


def apply_process_defaults(environ: MutableMapping[str, str] | None = None) -> None:
    """Set PROCESS_DEFAULTS where the environment does not say otherwise."""
    env = os.environ if environ is None else environ
    for key, value in PROCESS_DEFAULTS.items():
        env.setdefault(key, value)
