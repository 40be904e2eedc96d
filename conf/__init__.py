"""Configuration: YAML profiles (book, quick, smoke) validated into typed objects.

`load_config("quick", ["train.epochs=3"], known_models=REGISTRY)` reads conf/quick.yaml
(following `extends:`), applies the dotted overrides, and validates the result: the one
resolver, used by the CLI, the flows and the deployments alike. Any problem is a ConfigError
whose message names the offending key or value. The defaults live in the schema
(conf/schema.py); conf/book.yaml records the chapter's settings in full.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from fmnist.conf.schema import (
    DEFAULT_PROFILE,
    PROFILES_DIR,
    AugmentConfig,
    Config,
    DataConfig,
    DeployConfig,
    OrchestrationConfig,
    TrackingConfig,
    TrainConfig,
)

__all__ = [
    "DEFAULT_PROFILE",
    "AugmentConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "DeployConfig",
    "OrchestrationConfig",
    "TrackingConfig",
    "TrainConfig",
    "available_profiles",
    "config_from_dict",
    "load_config",
    "parse_overrides",
]


class ConfigError(ValueError):
    """A profile, an override or a value that does not validate."""


def available_profiles() -> list[str]:
    """The profile names shipped in conf/."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def _profile_path(profile: str) -> Path:
    path = Path(profile)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"profile file not found: {path}")
        return path
    path = PROFILES_DIR / f"{profile}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"unknown profile {profile!r}; available: {', '.join(available_profiles())}"
        )
    return path


def _read_profile(profile: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    path = _profile_path(profile)
    if str(path) in seen:
        raise ConfigError(f"profile {profile!r} extends itself: {' -> '.join(seen)}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    base_name = raw.pop("extends", None)
    if base_name is None:
        return raw
    base = _read_profile(str(base_name), (*seen, str(path)))
    base.pop("profile", None)  # a profile's name is its own, not its base's
    return _deep_merge(base, raw)


def _deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """Turn ["train.epochs=3", "train.models=[vgg]"] into {"train.epochs": 3, ...}."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        try:
            # YAML gives the natural types: 3 -> int, 0.5 -> float, [a, b] -> list, null.
            out[key] = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML: {exc}") from exc
    return out


def _apply_override(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node: Any = tree
    model: Any = Config
    for i, part in enumerate(parts):
        fields = getattr(model, "model_fields", None)
        if fields is None or part not in fields:
            where = ".".join(parts[:i]) or "the top level"
            known = ", ".join(sorted(fields)) if fields else "none (not a section)"
            raise ConfigError(
                f"unknown config key {dotted!r}: {part!r} is not in {where} ({known})"
            )
        if i == len(parts) - 1:
            node[part] = value
            return
        model = fields[part].annotation
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"config key {'.'.join(parts[: i + 1])!r} is not a section")


def _format_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "config"
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown config key {key!r}")
        else:
            shown = "" if err["type"] == "missing" else f" (got {err.get('input')!r})"
            lines.append(f"{key}: {err['msg']}{shown}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def load_config(
    profile: str = DEFAULT_PROFILE,
    overrides: Sequence[str] | Mapping[str, Any] = (),
    *,
    known_models: Iterable[str] | None = None,
) -> Config:
    """Read a profile, apply overrides (key=value strings or a dotted-key mapping), validate."""
    tree = _read_profile(profile)
    tree.setdefault("profile", Path(profile).stem)
    pairs = (
        overrides.items() if isinstance(overrides, Mapping) else parse_overrides(overrides).items()
    )
    for dotted, value in pairs:
        _apply_override(tree, dotted, value)
    context = {"known_models": list(known_models)} if known_models is not None else None
    try:
        return Config.model_validate(tree, context=context)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc)) from None


def config_from_dict(
    data: Mapping[str, Any], *, known_models: Iterable[str] | None = None
) -> Config:
    """Validate an already-resolved config (as a pipeline hands it to its training runs)."""
    context = {"known_models": list(known_models)} if known_models is not None else None
    try:
        return Config.model_validate(dict(data), context=context)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc)) from None
