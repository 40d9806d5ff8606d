"""``python -m bayesprune``: see :mod:`bayesprune.ui.cli`."""

import sys

from .ui.cli import main

if __name__ == "__main__":
    sys.exit(main())
