"""``python -m mats``: the ``mats`` command."""

import sys

from mats.cli import main

sys.exit(main())
