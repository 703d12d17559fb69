"""A self-rewriting progress line for people at a terminal, silent elsewhere so scheduler logs stay JSON-only."""

from __future__ import annotations

import sys
import threading
import time
from types import TracebackType
from typing import TextIO

MIN_INTERVAL_S = 0.1  # at most 10 redraws per second, however often workers report


class Progress:
    """Thread-safe counter of done/total rows; draws on `stream` only when enabled (default: stream is a TTY)."""

    def __init__(self, total: int, label: str, stream: TextIO = sys.stderr, enabled: bool | None = None) -> None:
        self.total = total
        self.label = label
        self.stream = stream
        self.enabled = _isatty(stream) if enabled is None else enabled
        self.done = 0
        self.text = ""
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._last_draw = float("-inf")
        self._width = 0

    def __enter__(self) -> Progress:
        self._started = time.monotonic()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with self._lock:
            if self.enabled:
                self._draw(force=True)
                self.stream.write("\n")
                self.stream.flush()

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self.done += n
            self._draw()

    def set(self, done: int) -> None:
        with self._lock:
            self.done = done
            self._draw()

    def note(self, text: str) -> None:
        """Show `text` after the counters (e.g. "3 ops in flight") until the next note."""
        with self._lock:
            self.text = text
            self._draw()

    def line(self) -> str:
        """The current line, e.g. "paying  12,000/100,000 rows  12%  3 ops in flight  2,345 rows/s"."""
        elapsed = time.monotonic() - self._started
        pct = f"{100 * self.done // self.total}%" if self.total else "100%"
        rate = f"{self.done / elapsed:,.0f} rows/s" if elapsed > 0 else ""
        parts = [self.label, f"{self.done:,}/{self.total:,} rows", pct, self.text, rate]
        return "  ".join(p for p in parts if p)

    def _draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last_draw < MIN_INTERVAL_S:
            return
        self._last_draw = now
        text = self.line()
        # Pad over the previous, possibly longer, line instead of relying on terminal escape codes.
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()
        self._width = len(text)


def _isatty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())
