"""Progress for people and schedulers: a self-rewriting line on a terminal; elsewhere a `progress` JSON log event
at most every EVENT_INTERVAL_S, so a long silent run still shows it is alive without flooding the log."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import TextIO, TypeVar

import structlog

MIN_INTERVAL_S = 0.1  # at most 10 redraws per second, however often workers report
EVENT_INTERVAL_S = 5.0  # off a terminal: at most one progress event every 5 s (plus one at the start and the end)
_quiet = False


def set_quiet(quiet: bool) -> None:
    """--quiet: neither a progress line nor progress events."""
    global _quiet
    _quiet = quiet


T = TypeVar("T")


class Progress:
    """Thread-safe counter of done/total rows; draws on `stream` only when enabled (default: stream is a TTY)."""

    def __init__(self, total: int, label: str, stream: TextIO = sys.stderr, enabled: bool | None = None) -> None:
        self.total = total
        self.label = label
        self.stream = stream
        self.enabled = (_isatty(stream) and not _quiet) if enabled is None else enabled
        self.events = not self.enabled and not _quiet
        self.done = 0
        self.sent = 0
        self.text = ""
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._last_draw = float("-inf")
        self._width = 0
        self._closed = threading.Event()
        self._ticker: threading.Thread | None = None

    def __enter__(self) -> Progress:
        self._started = time.monotonic()
        with self._lock:
            self._draw(force=True)
        if self.events:  # an operation may take minutes with no row done: still say so every interval
            self._ticker = threading.Thread(target=self._tick, name="progress-events", daemon=True)
            self._ticker.start()
        return self

    def _tick(self) -> None:
        while not self._closed.wait(EVENT_INTERVAL_S or 1.0):
            with self._lock:
                self._draw()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closed.set()
        if self._ticker is not None:
            self._ticker.join()
        with self._lock:
            self._draw(force=True)
            if self.enabled:
                self.stream.write("\n")
                self.stream.flush()

    def sending(self, operations: Iterable[T]) -> Iterator[T]:
        """Pass `operations` through, counting their rows (`item_count`, or that of a wrapper's `operation`)
        as sent when each is handed to a sender."""
        for op in operations:
            rows = getattr(op, "item_count", None)
            if rows is None:
                rows = getattr(getattr(op, "operation", None), "item_count", 0)
            with self._lock:
                self.sent += int(rows or 0)
            yield op

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
        if self.events:
            self._event(force)
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


    def _event(self, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._last_draw < EVENT_INTERVAL_S:
            return
        self._last_draw = now
        elapsed = now - self._started
        structlog.get_logger("payout.progress").info(
            "progress", stage=self.label, rows_planned=self.total, rows_sent=self.sent, rows_done=self.done,
            rows_per_s=round(self.done / elapsed, 1) if elapsed > 0 else None)


def _isatty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())
