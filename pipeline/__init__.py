"""Batch bonus payouts to Toloka: sheet in, every row paid exactly once, reconciliation report out."""

__version__ = "0.1.0"
