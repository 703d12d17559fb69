from __future__ import annotations

import io
import threading
import time

from pipeline.progress import MIN_INTERVAL_S, Progress


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_non_tty_stream_gets_no_output():
    out = io.StringIO()
    with Progress(10, "paying", stream=out) as p:
        p.advance(5)
        p.note("2 ops in flight")
    assert out.getvalue() == "" and p.done == 5


def test_tty_line_shows_counts_percent_note_and_rate():
    out = Tty()
    with Progress(100_000, "paying", stream=out) as p:
        p.set(12_000)
        p.note("3 ops in flight")
    final = out.getvalue().rstrip("\n").split("\r")[-1]
    assert final.startswith("paying  12,000/100,000 rows  12%  3 ops in flight  ")
    assert final.rstrip().endswith("rows/s")
    assert out.getvalue().endswith("\n")


def test_updates_from_many_threads_are_counted_and_redraws_are_throttled():
    out = Tty()
    started = time.monotonic()
    with Progress(8_000, "paying", stream=out) as p:
        workers = [threading.Thread(target=lambda: [p.advance() for _ in range(1000)]) for _ in range(8)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    elapsed = time.monotonic() - started
    assert p.done == 8_000
    assert out.getvalue().count("\r") <= elapsed / MIN_INTERVAL_S + 2
    assert "8,000/8,000 rows  100%" in out.getvalue()


def test_zero_total_reads_as_complete():
    assert "0/0 rows  100%" in Progress(0, "paying", enabled=False).line()


def test_sending_counts_rows_of_operations_and_of_wrapped_operations():
    from types import SimpleNamespace

    ops = [SimpleNamespace(item_count=3), SimpleNamespace(operation=SimpleNamespace(item_count=4))]
    with Progress(7, "paying", stream=io.StringIO()) as p:
        assert list(p.sending(ops)) == ops
    assert p.sent == 7
