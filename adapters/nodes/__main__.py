"""``python -m crossrank.adapters.nodes`` is ``crossrank nodes``."""

import sys

from crossrank.adapters.cli.nodes import main

sys.exit(main())
