"""`python -m proxy`: the same as the `llm-edge` command."""

import sys

from proxy.cli import main

sys.exit(main())
