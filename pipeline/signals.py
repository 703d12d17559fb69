"""SIGTERM and SIGINT during a run: stop sending, finish what is in flight within a grace period, report.

A handler never raises (no KeyboardInterrupt in the middle of a ledger write): it records the signal and
calls the listener, which asks the executor to stop. The first signal gives in-flight operations a grace
period to be recorded; a second one stops polling at once. Either way the run waits for every sender thread
before it writes the partial report and releases the ledger lock.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

HANDLED = (signal.SIGTERM, signal.SIGINT)


@dataclass
class StopSignal:
    """The signals received so far, and who to tell about the next one."""

    signum: int | None = None
    count: int = 0
    listener: Callable[[int, int], None] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def receive(self, signum: int) -> None:
        with self._lock:
            self.signum = self.signum or signum
            self.count += 1
            listener, count = self.listener, self.count
        if listener is not None:
            listener(signum, count)

    def listen(self, listener: Callable[[int, int], None] | None) -> None:
        """Call `listener(signum, count)` on each signal from now on (and at once for one already received)."""
        with self._lock:
            self.listener = listener
            pending = self.signum, self.count
        if listener is not None and pending[0] is not None:
            listener(*pending)  # type: ignore[arg-type]


_active: StopSignal | None = None
_late: list[int] = []  # signals received by a process-wide latch (see `latch`) outside any run


def latch() -> None:
    """For a process that is `payout` (the console script): from now on SIGTERM/SIGINT never kill it outright;
    outside a run a signal is only remembered (`latched()`), so the process still ends with its own exit code
    after writing its last lines, however often the signal is repeated."""
    for s in HANDLED:
        signal.signal(s, lambda signum, _frame: _late.append(signum))


def latched() -> int | None:
    return _late[0] if _late else None


@contextmanager
def stop_on_signals() -> Iterator[StopSignal]:
    """Route SIGTERM/SIGINT to a StopSignal while inside (main thread only; elsewhere nothing is installed).

    Nested, it yields the outer StopSignal: the CLI holds one for the whole command, so a signal before the
    run starts sending still stops it, and one after the report is written cannot kill the process half-way
    through its last lines (the CLI then exits 128 + signum).
    """
    global _active
    if _active is not None or threading.current_thread() is not threading.main_thread():
        yield _active or StopSignal()
        return
    stop = _active = StopSignal()
    previous = {s: signal.getsignal(s) for s in HANDLED}
    for s in HANDLED:
        signal.signal(s, lambda signum, _frame: stop.receive(signum))
    try:
        yield stop
    finally:
        _active = None
        for s, handler in previous.items():
            signal.signal(s, handler)
