"""``python -m robusthmc``: the command line."""

import sys

from robusthmc.cli import main

if __name__ == "__main__":
    sys.exit(main())
