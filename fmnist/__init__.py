"""The project's one import name: `fmnist.conf`, `fmnist.flows`, `fmnist.tasks`, ... are the
folders at the root of the repository (conf/, flows/, tasks/, stages/, tracking/, stack/,
bench/), so an installed copy puts a single `fmnist` package into site-packages instead of
seven generic names that would collide with other projects.

In a checkout (or a worker's clone of it at the deployed commit) this package's path is the
repository root, so whatever imports `fmnist.*` there gets that tree's code, not an installed
copy's. An installed wheel carries the folders inside this package instead (pyproject.toml
maps them there), and nothing is added. Standard library only: the GPU machine's benchmark
imports it with nothing but keras and numpy installed.
"""

from pathlib import Path

_here = Path(__file__).resolve().parent
if not (_here / "conf").is_dir() and (_here.parent / "conf" / "schema.py").is_file():
    __path__.append(str(_here.parent))
