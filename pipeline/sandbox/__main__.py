"""`python -m pipeline.sandbox`: same as `payout sandbox`."""
from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
