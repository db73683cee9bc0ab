"""``python -m robusthmc``: the command line."""

import sys

from robusthmc.cli import main

sys.exit(main())
