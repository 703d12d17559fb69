"""A local Toloka-compatible user-bonuses and operations API server with seeded fault injection."""
from __future__ import annotations

from .faults import FaultSpec
from .server import SandboxServer
from .validation import Limits

__all__ = ["FaultSpec", "Limits", "SandboxServer"]
