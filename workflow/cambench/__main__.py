"""``python -m cambench`` is the ``cambench`` command."""

import sys

from cambench.cli import main

sys.exit(main())
