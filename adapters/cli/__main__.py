"""``python -m crossrank.adapters.cli COMMAND ...`` is ``crossrank COMMAND ...``."""

import sys

from crossrank.adapters.cli import main

sys.exit(main())
