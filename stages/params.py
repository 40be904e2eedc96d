"""Settings objects of the plain logic, filled from the configuration without naming it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, Self


class FromSettings:
    """A dataclass that can be made from a mapping holding (at least) its fields, such as a
    section of the resolved config: the values come from there (conf/schema.py holds the
    defaults), so the dataclass repeats none."""

    @classmethod
    def of(cls, settings: Mapping[str, Any]) -> Self:
        """The object from the fields it has in settings; a missing one is a KeyError."""
        return cls(**{f.name: settings[f.name] for f in fields(cls)})  # type: ignore[arg-type]
