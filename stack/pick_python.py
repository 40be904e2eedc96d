"""Print the interpreter `make` builds the venv from: this one, unless the stack's service
users could not run it.

    python3 stack/pick_python.py        (the Makefile's default PYTHON)

Started as root, the stack runs its servers and workers as unprivileged users, who run the
venv's Python: a link to the interpreter it was built from. pyenv's lives under /root (mode
0700), out of their reach, and `stack-up` would stop. So when the interpreter running this
script (or the file its links lead to) lies where others cannot enter, Debian's
/usr/bin/python3 is printed instead, if it is a version the project supports. Not root, or
no usable alternative: this interpreter, as before. Standard library only: no venv yet.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

FALLBACK = "/usr/bin/python3"
SUPPORTED = "import sys; sys.exit(not (3, 11) <= sys.version_info[:2] < (3, 14))"


def others_can_run(path: str) -> bool:
    """Whether any user can run path: every folder on the way, and the file, o+x (both the
    path as given and where its links lead: a venv links to the path as given)."""
    for target in {Path(path), Path(os.path.realpath(path))}:
        for item in [*reversed(target.parents), target]:
            try:
                if not os.stat(item).st_mode & 0o001:
                    return False
            except OSError:
                return False
    return True


def pick(candidate: str) -> str:
    """candidate, or FALLBACK when candidate is out of other users' reach and we are root."""
    if os.geteuid() != 0 or others_can_run(candidate):
        return candidate
    if others_can_run(FALLBACK):
        supported = subprocess.run([FALLBACK, "-c", SUPPORTED], check=False, timeout=60)
        if supported.returncode == 0:
            return FALLBACK
    return candidate  # stack-up then says which folder blocks the service users


if __name__ == "__main__":
    print(pick(sys.executable))
