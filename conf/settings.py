"""Settings from the environment, read when asked for (never at import), in one place.

`settings()` reads the variables the project honours; `apply_process_defaults()` sets the
defaults a process that runs the pipeline needs, before Keras, TensorFlow or Prefect is
imported, without overriding what the user set.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# Defaults for a process that trains or orchestrates; a value already in the environment wins.
PROCESS_DEFAULTS: dict[str, str] = {
    # Keras reads its backend once, at its first import.
    "KERAS_BACKEND": "tensorflow",
    # TensorFlow's C++ start-up chatter hides the pipeline's own logs.
    "TF_CPP_MIN_LOG_LEVEL": "2",
    # The ephemeral Prefect server's telemetry heartbeat races the flow for its SQLite file
    # ("database is locked" tracebacks); it sends nothing useful offline anyway.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}


class Settings(BaseSettings):
    """The environment variables the project reads."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    mlflow_tracking_uri: str | None = Field(
        None,
        validation_alias="MLFLOW_TRACKING_URI",
        description="Wins over the profile's tracking.tracking_uri.",
    )
    keras_backend: str | None = Field(None, validation_alias="KERAS_BACKEND")


def settings() -> Settings:
    """The settings as the environment says now."""
    return Settings()


def apply_process_defaults(environ: MutableMapping[str, str] | None = None) -> None:
    """Set PROCESS_DEFAULTS where the environment does not say otherwise."""
    env = os.environ if environ is None else environ
    for key, value in PROCESS_DEFAULTS.items():
        env.setdefault(key, value)
