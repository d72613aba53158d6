"""``python -m vicious``: the same command line as ``vicious``."""

import sys

from vicious.cli import main

sys.exit(main())
