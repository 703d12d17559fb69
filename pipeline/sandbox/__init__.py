"""A local Toloka-compatible user-bonuses and operations API server with seeded fault injection.

The names below load on first use, so `payout run` against Toloka never imports aiohttp or the server.
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["FaultSpec", "Limits", "SandboxServer"]
_WHERE = {"FaultSpec": ".faults", "Limits": ".validation", "SandboxServer": ".server"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
