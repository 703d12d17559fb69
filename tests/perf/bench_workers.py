"""Throughput of `payout run` workers sharing one batch on a PostgreSQL ledger (issue 12): 1, 2 and 4 workers.

Each measurement: a fresh `payout sandbox` process (`--rate-limit 100000 --daily-quota 1000000`), a fresh database
on a throwaway PostgreSQL 15 server (tests/pg_server.py), N `payout run` processes of the same all-valid,
finance-shaped sheet started together; wall time from the first start to the last exit, checked against the
server's own count of created bonuses. The SQLite ledger (one run) is measured the same way for comparison.

    python tests/perf/bench_workers.py [--rows 100000] [--workers 1,2,4] [--rounds 1] [--chunk-size 5000]
                                       [--concurrency 4] [--json tests/perf/results/workers.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(HERE), str(REPO / "tests")]

from bench import TOKEN, cpu_seconds, sandbox_stats, sheet, sheets_dir, start_sandbox, stop  # noqa: E402
from pg_server import PgServer  # noqa: E402


def once(pg: PgServer | None, sheet_csv: Path, workers: int, chunk: int, concurrency: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    proc, url = start_sandbox(tmp / "sandbox.sqlite")
    ledger = pg.new_database() if pg is not None else str(tmp / "ledger.sqlite")
    env = dict(os.environ, TOLOKA_TOKEN=TOKEN, PAYOUT_DATA_DIR=str(tmp / "data"))
    try:
        cmd = [sys.executable, "-m", "pipeline", "--log-json", "run", str(sheet_csv), "--api-url", url,
               "--ledger", ledger, "--out", str(tmp / "reports"), "--chunk-size", str(chunk),
               "--concurrency", str(concurrency), "--batch-id", f"bench-{sheet_csv.stem}"]
        t0 = time.perf_counter()
        logs = [open(tmp / f"worker{i}.log", "wb") for i in range(workers)]  # noqa: SIM115 - closed below
        runs = [subprocess.Popen(cmd, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT) for log in logs]
        codes = [r.wait() for r in runs]
        wall = time.perf_counter() - t0
        for log in logs:
            log.close()
        phases = [_phases(tmp / f"worker{i}.log") for i in range(workers)]
        stats = sandbox_stats(url)
        server_cpu = cpu_seconds(proc.pid)
    finally:
        stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    return {"workers": workers, "ledger": "postgresql" if pg else "sqlite", "wall_s": round(wall, 2),
            "exit_codes": codes, "server_created": stats.get("bonuses_created"), "server_cpu_s": round(server_cpu, 2),
            "posts": stats["requests"].get("POST /api/v1/user-bonuses", 0), "phases_s": phases}


def _phases(log: Path) -> dict[str, float]:
    """Where a worker's time went, from its JSON log: start-up + reading the sheet, planning (waiting for the
    planning lock, recovery, matching, writing the plan), paying, and the report."""
    stamps: dict[str, datetime] = {}
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") in ("data_dir", "sheet_checked", "execute_start", "execute_done"):
                stamps[event["event"]] = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
    order = ["data_dir", "sheet_checked", "execute_start", "execute_done"]
    names = ["read_check", "plan", "pay"]
    return {n: round((stamps[b] - stamps[a]).total_seconds(), 2) for n, a, b in zip(names, order, order[1:])
            if a in stamps and b in stamps}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--chunk-size", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--no-sqlite", action="store_true", help="skip the SQLite baseline")
    ap.add_argument("--json", type=Path, default=HERE / "results" / "workers.json")
    args = ap.parse_args()
    sheet_csv, _ = sheet(sheets_dir(None), args.rows, valid_only=True)
    results = []
    with PgServer() as pg:
        for r in range(args.rounds):
            plan: list[tuple[PgServer | None, int]] = [] if args.no_sqlite else [(None, 1)]
            plan += [(pg, int(n)) for n in args.workers.split(",")]
            for server, n in plan:
                res = once(server, sheet_csv, n, args.chunk_size, args.concurrency)
                if res["server_created"] != args.rows or any(c != 0 for c in res["exit_codes"]):
                    raise RuntimeError(f"expected {args.rows} bonuses and exit 0: {res}")
                res["bonuses_per_s"] = round(args.rows / res["wall_s"])
                res["round"] = r + 1
                results.append(res)
                print(f"round {r + 1} {res['ledger']:<10} {n} worker(s): {res['wall_s']:6.2f} s "
                      f"{res['bonuses_per_s']:>7,}/s  sandbox cpu {res['server_cpu_s']} s  posts {res['posts']}",
                      flush=True)
                print(f"    phases per worker (s): {res['phases_s']}", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rows": args.rows, "chunk_size": args.chunk_size,
                                     "concurrency": args.concurrency, "cpus": os.cpu_count(), "results": results},
                                    indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
