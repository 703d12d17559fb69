"""`python -m pipeline` is `payout`."""

import sys

from pipeline.cli import main

sys.exit(main())
