"""The packages a process runs with, against the lock of the code it runs (requirements.lock).

A worker on another machine installs the lock, then runs whatever commit a deployment names;
if its Keras, TensorFlow, JAX or numpy (or any other locked package) is not the version that
commit pins, it would train different nets in silence. `check_packages` refuses that at the
start of a training run, naming each package with both versions; `installed_packages` is what
the run records of its environment. Standard library and `packaging` (a pip dependency) only.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the checkout (or a worker's clone of it)
LOCK_FILE = "requirements.lock"
# Recorded as tags on every training run: what decides the numbers most.
KEY_PACKAGES = ("keras", "tensorflow", "jax", "jaxlib", "numpy", "prefect", "mlflow")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)\s*(?:;\s*(.+?))?\s*(?:#.*)?$")


class PackageSkew(RuntimeError):
    """Installed packages differ from the lock of the code being run; the message names each."""


@dataclass(frozen=True)
class Skew:
    """One package whose installed version is not the locked one (None: not installed)."""

    name: str
    locked: str
    installed: str | None

    def __str__(self) -> str:
        if self.installed is None:
            return f"{self.name} {self.locked} locked, not installed"
        return f"{self.name} {self.locked} locked, {self.installed} installed"


def normalize(name: str) -> str:
    """A distribution name as PEP 503 compares them (Ruamel.YAML -> ruamel-yaml)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _applies(marker: str | None) -> bool:
    if not marker:
        return True
    from packaging.markers import Marker

    return Marker(marker).evaluate()


def read_lock(text: str) -> dict[str, str]:
    """name -> version of each `name==version` pin that applies here (pip-compile's output)."""
    pins = {}
    for line in text.splitlines():
        if match := _PIN.match(line.strip()):
            name, version, marker = match.groups()
            if _applies(marker):
                pins[normalize(name)] = version
    return pins


def installed_packages() -> dict[str, str]:
    """name -> version of every distribution this interpreter sees."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(normalize(name), dist.version)  # the first on sys.path wins
    return found


def required_packages(pyproject_text: str) -> set[str]:
    """The names of the project's own dependencies ([project] dependencies)."""
    deps = tomllib.loads(pyproject_text).get("project", {}).get("dependencies", [])
    return {normalize(re.split(r"[\s\[<>=!~;]", dep, maxsplit=1)[0]) for dep in deps}


def version_skew(
    lock: Mapping[str, str], installed: Mapping[str, str], required: Iterable[str] = ()
) -> list[Skew]:
    """Every locked package installed at another version, and every required one missing.

    A locked package that is not installed (the dev tools, JAX on a TensorFlow machine) is
    no skew unless the project itself requires it; one installed but not locked (CUDA wheels
    of the gpu extra) is none either.
    """
    needed = set(required)
    skew = []
    for name, locked in sorted(lock.items()):
        have = installed.get(name)
        if (have is None and name in needed) or (have is not None and have != locked):
            skew.append(Skew(name, locked, have))
    return skew


def check_packages(root: Path = ROOT) -> str | None:
    """Raise PackageSkew if this interpreter's packages differ from root's lock; return the
    lock's path, or None when root has no lock (an installed wheel: nothing to compare)."""
    lock_path = root / LOCK_FILE
    if not lock_path.is_file():
        return None
    pyproject = root / "pyproject.toml"
    required = required_packages(pyproject.read_text()) if pyproject.is_file() else set()
    skew = version_skew(read_lock(lock_path.read_text()), installed_packages(), required)
    if skew:
        raise PackageSkew(
            f"this machine's packages differ from {LOCK_FILE} of the code it runs "
            f"({len(skew)}): " + "; ".join(map(str, skew)) + ". Install the lock: "
            f"pip install -r {LOCK_FILE} (or `make .venv/.installed` in a checkout)"
        )
    return str(lock_path)


def packages_text(installed: Mapping[str, str]) -> str:
    """`name==version` lines, sorted: the record of an environment (and what it hashes)."""
    return "".join(f"{name}=={version}\n" for name, version in sorted(installed.items()))


def packages_digest(installed: Mapping[str, str]) -> str:
    """SHA-256 of packages_text: equal digests, equal environments."""
    return hashlib.sha256(packages_text(installed).encode()).hexdigest()
