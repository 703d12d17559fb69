"""`python -m pipeline` is `payout`."""

from pipeline.cli import entry

entry()
