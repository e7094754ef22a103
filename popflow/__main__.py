"""``python -m popflow``: the command line, exactly as the ``popflow`` script runs it."""

from __future__ import annotations

import sys

from popflow.cli import main

if __name__ == "__main__":
    sys.exit(main())
