"""``python -m mats.gateway gateway run NAME`` / ``python -m mats.gateway broker-sim ...``."""

import sys

from mats.gateway.cli import main

sys.exit(main())
