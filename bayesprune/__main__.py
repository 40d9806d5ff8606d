"""``python -m bayesprune``: see :mod:`bayesprune.cli`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
