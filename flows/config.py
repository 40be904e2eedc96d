"""Resolving a flow's configuration: profile + overrides + explicit parameters, validated."""

from __future__ import annotations

from typing import Any

from conf import Config, load_config, parse_overrides
from stages.models import REGISTRY


def resolve_config(
    profile: str = "quick",
    models: list[str] | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    overrides: dict[str, Any] | list[str] | None = None,
    train_mode: str | None = None,
) -> Config:
    """Profile + overrides + the flow's explicit parameters, validated (ConfigError if not)."""
    merged: dict[str, Any] = {}
    if isinstance(overrides, list):
        merged |= parse_overrides(overrides)
    elif overrides:
        merged |= dict(overrides)
    explicit = {
        "train.models": models,
        "train.epochs": epochs,
        "train.batch_size": batch_size,
        "seed": seed,
        "orchestration.mode": train_mode,
    }
    merged |= {k: v for k, v in explicit.items() if v is not None}
    return load_config(profile, merged, known_models=list(REGISTRY))


def config_from_dict(data: dict[str, Any]) -> Config:
    """Validate an already-resolved config (as handed from a pipeline to its training runs)."""
    from pydantic import ValidationError

    from conf import ConfigError

    try:
        return Config.model_validate(data, context={"known_models": list(REGISTRY)})
    except ValidationError as exc:
        raise ConfigError(str(exc)) from None
