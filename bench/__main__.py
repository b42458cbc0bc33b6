"""`python -m bench`: the side-by-side comparison (see bench/compare.py)."""

import sys

from bench.compare import main

sys.exit(main())
