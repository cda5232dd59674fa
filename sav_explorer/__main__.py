"""`python -m sav_explorer`: the command line (see `sav_explorer.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
