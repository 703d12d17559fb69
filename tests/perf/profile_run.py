"""Where a `payout run` spends its time, stage by stage, in this process (no change to pipeline/).

    python tests/perf/profile_run.py [--cprofile FILE] [--top 25] -- run SHEET --dry-run --ledger L --out O --data-dir D
    TOLOKA_TOKEN=bench python tests/perf/profile_run.py -- run SHEET --api-url URL --batch-id B --ledger L ...

Everything after `--` is what `payout` (python -m pipeline) would get. Coarse stage functions of pipeline/ are
wrapped with timers (wall and this thread's CPU, inclusive and exclusive of nested stages, summed over calls and
threads); per-row functions are not wrapped (the timers would distort them): use `--cprofile` for those, which
profiles the main thread and each executor thread (merged) and prints the top functions by own time.
"""

from __future__ import annotations

import time

T0 = time.perf_counter()

import argparse  # noqa: E402
import cProfile  # noqa: E402
import functools  # noqa: E402
import os  # noqa: E402
import pstats  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from collections import defaultdict  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

STATS: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0, 0.0, 0.0, 0, 0])
# calls, wall, cpu, exclusive wall, exclusive cpu, process peak RSS after it (KiB), RSS right after it (KiB)
TIMELINE: list[tuple[str, str, float, float]] = []  # (thread, stage, start, end), seconds since T0
_local = threading.local()
_stats_lock = threading.Lock()


def timed(name: str, fn: Callable[..., Any], by_parent: bool = False, top_name: str | None = None
          ) -> Callable[..., Any]:
    """`fn` timed under `name`; with by_parent, under "name (in <the enclosing timed stage>)", or `top_name`
    when no timed stage encloses it."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        stack = getattr(_local, "stack", None)
        if stack is None:
            stack = _local.stack = []
        key = (f"{name} (in {stack[-1][2].strip()})" if stack else top_name or name) if by_parent else name
        frame = [0.0, 0.0, key]  # children's wall, cpu; the stage's name
        stack.append(frame)
        w0, c0 = time.perf_counter(), time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            wall, cpu = time.perf_counter() - w0, time.thread_time() - c0
            stack.pop()
            if stack:
                stack[-1][0] += wall
                stack[-1][1] += cpu
            with _stats_lock:
                TIMELINE.append((threading.current_thread().name, key.strip(), w0 - T0, w0 - T0 + wall))
                s = STATS[key]
                s[0] += 1
                s[1] += wall
                s[2] += cpu
                s[3] += wall - frame[0]
                s[4] += cpu - frame[1]
                if not stack:  # a top-level stage: where the process's peak memory grew
                    s[5] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                    s[6] = _rss_kib()
    return wrapper


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


def timed_generator(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """A generator's own work between yields (record_intents: items + intent commit per chunk)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        gen = fn(*args, **kwargs)
        step = timed(name, lambda: next(gen, _END))
        while True:
            item = step()
            if item is _END:
                return
            yield item
    return wrapper


_END = object()


def patch(obj: Any, attr: str, name: str, wrap: Callable[..., Any] = timed) -> None:
    """Wrap obj.attr; a function renamed or moved by later work is skipped (the profile just lacks that line)."""
    if hasattr(obj, attr):
        setattr(obj, attr, wrap(name, getattr(obj, attr)))


def patch_by_parent(obj: Any, attr: str, name: str, top_name: str | None = None) -> None:
    if hasattr(obj, attr):
        setattr(obj, attr, timed(name, getattr(obj, attr), by_parent=True, top_name=top_name))


def install() -> None:
    import requests

    from pipeline import (
        dedupe,
        execute,
        ingest,
        keys,
        ledger,
        plan,
        report,
        run,
        toloka,
        validate,
        wire,
    )

    patch(ingest, "read_sheets", "1 ingest (read_sheets)")
    patch(validate, "validate_rows", "2 validate (validate_rows)")
    patch(keys, "assign_row_keys", "3 keys (assign_row_keys)")
    patch(dedupe, "find_duplicates", "4 dedupe (find_duplicates)")
    patch(ledger.Ledger, "__enter__", "5 ledger open (Ledger.__enter__)")
    patch(run, "_recover", "5 recovery (_recover: operations listing)")
    patch(run, "_match_ledger", "5 ledger match (_match_ledger)")
    patch_by_parent(ledger.Ledger, "known_rows", "  ledger.known_rows", "10 states (ledger.known_rows)")
    patch(dedupe, "match_ledger", "  dedupe.match_ledger")
    patch(dedupe.LedgerMatch, "adopt_keys", "5 adopt keys (LedgerMatch.adopt_keys)")
    patch(keys, "lookalike_keys", "6 lookalike keys (keys.lookalike_keys)")
    patch(ledger.Ledger, "recent_lookalikes", "6 ledger.recent_lookalikes")
    patch(dedupe, "hold_lookalikes", "6 dedupe.hold_lookalikes")
    patch(plan, "plan_attempts", "7 plan (plan_attempts)")
    patch(ledger.Ledger, "start_run", "8 ledger.start_run")
    patch(ledger.Ledger, "supersede_missing", "8 ledger.supersede_missing")
    patch(run, "record_intents", "  9a intent (record_intents generator, main thread)", timed_generator)
    patch(wire, "build_items", "  wire.build_items")
    patch(ledger.Ledger, "record_intent", "  ledger.record_intent (commit)")
    patch(run, "execute", "9 execute (run.execute)")
    patch(execute.Executor, "_drive", "  9b Executor._drive (per operation, 4 threads)")
    patch(ledger.Ledger, "rows_of_operation", "    ledger.rows_of_operation")
    patch(execute, "body_for", "    wire.body_for (POST body)")
    patch(toloka.TolokaClient, "create_bonuses_async", "    POST user-bonuses")
    patch(ledger.Ledger, "mark_submitted", "    ledger.mark_submitted")
    patch(execute.Executor, "_wait", "    Executor._wait (poll sleeps + GET operation)")
    patch(toloka.TolokaClient, "get_operation_log", "    GET operation log")
    patch(execute, "map_log", "    map_log (log -> row results)")
    patch(ledger.Ledger, "record_outcome", "    ledger.record_outcome (commit)")
    patch_by_parent(requests.Session, "request", "      HTTP requests.Session.request")
    patch(ledger.Ledger, "operations_frame", "10 ledger.operations_frame")
    patch(execute.Executor, "settle_unknown", "  9 Executor.settle_unknown")
    patch(report, "assemble_rows", "10 assemble (report.assemble_rows)")
    patch(report, "write_report", "11 report (write_report)")
    patch(ledger.Ledger, "finish_run", "11 ledger.finish_run")


class ThreadProfiles:
    """cProfile of the main thread plus one per executor thread (each `_drive` call), merged at the end."""

    def __init__(self, timer: Callable[[], float]) -> None:
        self.timer = timer
        self.profiles: list[cProfile.Profile] = []
        self._local = threading.local()

    def install(self) -> None:
        from pipeline import execute
        drive = execute.Executor._drive
        profiles = self

        def profiled(executor: Any, op: Any) -> Any:
            prof = getattr(profiles._local, "prof", None)
            if prof is None:
                prof = profiles._local.prof = cProfile.Profile(profiles.timer)
                profiles.profiles.append(prof)
            prof.enable()
            try:
                return drive(executor, op)
            finally:
                prof.disable()
        execute.Executor._drive = profiled


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cprofile", type=Path, help="also cProfile; write the merged stats here")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--timeline", type=Path, help="write every timed call (thread, stage, start s, end s) as JSON")
    ap.add_argument("--timer", choices=("wall", "cpu"), default="wall",
                    help="cProfile clock: wall (perf_counter) or this thread's CPU (thread_time; robust to load "
                         "from other processes, blind to waits and to pyarrow's worker threads)")
    ap.add_argument("payout_args", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    argv = args.payout_args[1:] if args.payout_args[:1] == ["--"] else args.payout_args

    t_imp = time.perf_counter()
    from pipeline import cli
    imports_s = time.perf_counter() - t_imp
    timer = time.thread_time if args.timer == "cpu" else time.perf_counter
    profiles = ThreadProfiles(timer) if args.cprofile else None
    if profiles:
        profiles.install()  # under the timers: _drive's timer then includes the profiler's own overhead
    install()
    main_prof = cProfile.Profile(timer) if profiles else None
    c0 = time.process_time()
    t1 = time.perf_counter()
    if main_prof:
        main_prof.enable()
    try:
        code = cli.main(argv)
    finally:
        if main_prof:
            main_prof.disable()
    wall = time.perf_counter() - t1
    cpu = time.process_time() - c0
    out = sys.stderr
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS {peak_mib:.0f} MiB; exit {code}; interpreter start -> main {t1 - T0:.2f} s (of which pipeline imports {imports_s:.2f} s); "
          f"cli.main {wall:.2f} s wall, {cpu:.2f} s process CPU (all threads)", file=out)
    print(f"{'stage (cpu: the calling thread only)':<58}{'calls':>6}{'wall s':>9}{'cpu s':>8}{'excl wall':>11}"
          f"{'excl cpu':>10}{'peak MiB':>10}{'RSS MiB':>9}", file=out)
    for name, (calls, w, c, ew, ec, peak, rss) in STATS.items():  # in the order first called
        mem = f"{peak / 1024:>10.0f}{rss / 1024:>9.0f}" if peak else ""
        print(f"{name:<58}{int(calls):>6}{w:>9.2f}{c:>8.2f}{ew:>11.2f}{ec:>10.2f}{mem}", file=out)
    top = [v for n, v in STATS.items() if not n.startswith(" ")]
    print(f"{'other (cli.main minus the numbered stages)':<58}{'':>6}{wall - sum(v[1] for v in top):>9.2f}", file=out)
    if args.timeline:
        import json
        args.timeline.write_text(json.dumps({"t_main": t1 - T0, "calls": TIMELINE}))
    if profiles and main_prof:
        stats = pstats.Stats(main_prof, stream=out)
        for p in profiles.profiles:
            stats.add(p)
        stats.dump_stats(str(args.cprofile))
        print(f"\ncProfile (main + {len(profiles.profiles)} executor threads), top {args.top} by own time:", file=out)
        stats.sort_stats("tottime").print_stats(args.top)
    return code


if __name__ == "__main__":
    sys.exit(main())
