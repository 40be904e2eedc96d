"""A pytest plugin for `make mutate` only ([tool.mutmut] pytest_add_cli_args: -p ...).

mutmut names a mutant by its file's path (stages/champion.py -> stages.champion.x_decide
__mutmut_1) and matches that name against the module its function was imported as; the code
and the tests import it as fmnist.stages.champion (fmnist/__init__.py maps the root folders
in), so no mutant ever matched: every run stopped at "tests recorded trampoline hits but none
match any mutant key". This finder makes fmnist.<folder>.<module> the very module object
<folder>.<module>, imported once under the name mutmut knows.
"""

from __future__ import annotations

import functools
import importlib
import importlib.abc
import importlib.util
import os
import sys
from importlib.machinery import ModuleSpec
from types import ModuleType

import pytest

# `make mutate MUTATE_TESTS='tests/unit/test_stack_pools.py ...'`: only these tests (node id
# prefixes) run, in mutmut's first pass and for each mutant; unset, all of the selection.
TESTS_VAR = "FMNIST_MUTATE_TESTS"

FOLDERS = ("conf", "flows", "tasks", "stages", "tracking", "stack", "bench")
PREFIX = "fmnist."


class Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """fmnist.<folder>[.<module>] -> the module <folder>[.<module>]."""

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> ModuleSpec | None:
        """A spec of our own for the mapped names; None (the usual finders) for the rest,
        and for folders mutmut did not copy (stack/, bench/: the installed ones serve)."""
        folder = fullname[len(PREFIX) :].split(".")[0]
        if not fullname.startswith(PREFIX) or folder not in FOLDERS or not _here(folder):
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def exec_module(self, module: ModuleType) -> None:
        """Put the real module in the alias's place (the import system returns what
        sys.modules holds under the name once this returns), under both names before its
        body runs: a package's __init__ imports its own modules by their fmnist names."""
        name = module.__name__
        real = name[len(PREFIX) :]
        found = sys.modules.get(real)
        if found is None:
            spec = importlib.util.find_spec(real)
            if spec is None:
                raise ModuleNotFoundError(f"no module named {real!r} (for {name!r})")
            if spec.loader is None:  # a namespace package (stages/, tasks/): no body to run
                sys.modules[name] = importlib.import_module(real)
                return
            found = importlib.util.module_from_spec(spec)
            sys.modules[real] = sys.modules[name] = found
            parent, _, child = real.rpartition(".")
            if parent:
                setattr(sys.modules[parent], child, found)
            try:
                spec.loader.exec_module(found)
            except BaseException:
                sys.modules.pop(real, None)
                raise
        sys.modules[name] = found


@functools.cache
def _here(folder: str) -> bool:
    return importlib.util.find_spec(folder) is not None


sys.meta_path.insert(0, Alias())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep only the tests FMNIST_MUTATE_TESTS names (a quicker run over a few modules)."""
    prefixes = tuple(os.environ.get(TESTS_VAR, "").split())
    if not prefixes:
        return
    kept = [item for item in items if item.nodeid.startswith(prefixes)]
    config.hook.pytest_deselected(items=[item for item in items if item not in kept])
    items[:] = kept
