"""``python -m vicious.cli``, as ``vicious`` and ``python -m vicious``."""

import sys

from vicious.cli import main

sys.exit(main())
