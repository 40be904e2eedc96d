"""python -m fmnist.bench: see bench/run.py."""

import sys

from fmnist.bench.run import main

sys.exit(main())
