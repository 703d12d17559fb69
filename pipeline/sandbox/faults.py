"""Seeded fault injection: which faults fire, how often, and how many fired."""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, fields

PROBABILITY_KEYS = ("http_500", "http_503", "http_429", "reset_after_commit", "op_fail")
INTEGER_KEYS = ("burst_429", "latency_ms", "slow_op_ms")


@dataclass(frozen=True)
class FaultSpec:
    """Fault settings; probabilities are per request (per operation for op_fail)."""

    http_500: float = 0.0
    http_503: float = 0.0
    http_429: float = 0.0
    burst_429: int = 1
    reset_after_commit: float = 0.0
    latency_ms: int = 0
    slow_op_ms: int = 0
    op_fail: float = 0.0

    @classmethod
    def parse(cls, spec: str | None) -> FaultSpec:
        """Parse "http_500=0.1,latency_ms=20"; raise ValueError naming a bad key or value."""
        values: dict[str, float | int] = {}
        for part in (spec or "").split(","):
            part = part.strip()
            if not part:
                continue
            key, sep, raw = part.partition("=")
            key = key.strip()
            if not sep or key not in PROBABILITY_KEYS + INTEGER_KEYS:
                raise ValueError(f"unknown fault {part!r}; known: {', '.join(PROBABILITY_KEYS + INTEGER_KEYS)}")
            if key in PROBABILITY_KEYS:
                value: float | int = float(raw)
                if not 0.0 <= value <= 1.0:
                    raise ValueError(f"fault {key} must be a probability in [0, 1], got {raw!r}")
            else:
                value = int(raw)
                if value < 0 or (key == "burst_429" and value < 1):
                    raise ValueError(f"fault {key} must be a non-negative integer (burst_429 >= 1), got {raw!r}")
            values[key] = value
        return cls(**values)  # type: ignore[arg-type]  # each key was checked against its field above

    def render(self) -> str:
        """The spec as text, listing only the faults that differ from "none"."""
        default = FaultSpec()
        return ",".join(
            f"{f.name}={getattr(self, f.name)}" for f in fields(self) if getattr(self, f.name) != getattr(default, f.name)
        )


class Faults:
    """Decides, reproducibly from a seed, whether each fault fires; counts the ones that did."""

    def __init__(self, spec: FaultSpec, seed: int = 0, injected: Counter[str] | None = None) -> None:
        self.spec = spec
        self.seed = seed
        self._rng = random.Random(seed)
        self._burst_left = 0
        self.injected: Counter[str] = Counter() if injected is None else injected

    def roll(self, kind: str) -> bool:
        """True when fault `kind` (a probability key) fires now; counts it."""
        probability = getattr(self.spec, kind)
        if probability <= 0.0 or self._rng.random() >= probability:
            return False
        self.injected[kind] += 1
        return True

    def before_request(self) -> int | None:
        """The HTTP status to fail this request with before any processing, or None."""
        if self._burst_left > 0:
            self._burst_left -= 1
            self.injected["http_429"] += 1
            return 429
        if self.roll("http_500"):
            return 500
        if self.roll("http_503"):
            return 503
        if self.roll("http_429"):
            self._burst_left = self.spec.burst_429 - 1
            return 429
        return None
