"""Benchmarks: P1 offline stages vs the bare floor, P2 end to end vs a toloka-kit script, P3 the sandbox.

    python tests/perf/bench.py [--sizes 10000,100000,1000000] [--skip-e2e] [--out tests/perf/results/bench.json]

Every measurement is a fresh child process; wall time from the parent, peak RSS from that child's own
rusage (os.wait4), so one measurement never inherits another's peak. Prints one table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))

TOKEN = "bench"
GIB = 1024**3
TARGETS = {"p1_1m_wall_s": 5.0, "p1_1m_rss_gib": 1.0, "p1_floor_ratio": 4.0, "p1_linear_1m_over_10k": 120.0,
           "p2_bonuses_per_s": 20_000, "p2_vs_toloka_kit": 3.0}

FLOOR_CSV = ("import sys, pandas as pd; "
             "pd.read_csv(sys.argv[1], engine='pyarrow').to_parquet(sys.argv[2])")
FLOOR_PARQUET = ("import sys, pandas as pd; "
                 "pd.read_parquet(sys.argv[1]).to_parquet(sys.argv[2])")


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    from importlib.metadata import version
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(ram / GIB, 1),
            "python": platform.python_version(), "os": f"{platform.system()} {platform.release()}",
            "pandas": version("pandas"), "pyarrow": version("pyarrow")}


def measure(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, float]:
    """Wall seconds and peak RSS (bytes) of one fresh child; fails loudly on a crash."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):  # 1 = rows need attention (the invalid/duplicate mix): expected
        raise RuntimeError(f"{cmd} exited {proc.returncode}:\n{err.decode(errors='replace')[-3000:]}")
    return {"wall_s": wall, "rss": usage.ru_maxrss * 1024}


def median_of(cmd: list[str], repeats: int, env: dict[str, str] | None = None) -> dict[str, float]:
    runs = [measure(cmd, env) for _ in range(repeats)]
    return {"wall_s": statistics.median(r["wall_s"] for r in runs), "rss": max(r["rss"] for r in runs),
            "runs": [round(r["wall_s"], 3) for r in runs]}


def dry_run_cmd(sheet: Path, tmp: Path) -> list[str]:
    return [sys.executable, "-m", "pipeline", "--log-json", "run", str(sheet), "--dry-run",
            "--ledger", str(tmp / "ledger.sqlite"), "--out", str(tmp / "reports")]


def p1(sizes: list[int], work: Path) -> list[dict[str, Any]]:
    """Dry-run wall/RSS per size and format, next to the floor (read + to_parquet) of the same file."""
    rows = []
    for n in sizes:
        t0 = time.perf_counter()
        # in a child: a child's ru_maxrss includes the parent's footprint at fork, so the parent stays small
        subprocess.run([sys.executable, str(Path(__file__).with_name("make_sheet.py")), "--rows", str(n),
                        "--out", str(work / f"sheets_{n}")], check=True, cwd=REPO, stdout=subprocess.DEVNULL)
        csv_path, pq_path = work / f"sheets_{n}" / f"sheet_{n}.csv", work / f"sheets_{n}" / f"sheet_{n}.parquet"
        print(f"  generated {n:,} rows in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        repeats = 3 if n < 1_000_000 else 2
        for fmt, path, floor_code in (("csv", csv_path, FLOOR_CSV), ("parquet", pq_path, FLOOR_PARQUET)):
            tmp = Path(tempfile.mkdtemp(dir=work))
            dry = median_of(dry_run_cmd(path, tmp), repeats)
            floor = median_of([sys.executable, "-c", floor_code, str(path), str(tmp / "floor.parquet")], repeats)
            row = {"rows": n, "format": fmt, "dry_run_s": round(dry["wall_s"], 3),
                   "dry_run_rss_mib": round(dry["rss"] / 2**20), "floor_s": round(floor["wall_s"], 3),
                   "floor_rss_mib": round(floor["rss"] / 2**20),
                   "ratio_to_floor": round(dry["wall_s"] / floor["wall_s"], 2),
                   "dry_run_runs": dry["runs"], "floor_runs": floor["runs"]}
            rows.append(row)
            print(f"  P1 {n:>9,} {fmt:<7} dry {row['dry_run_s']:.2f}s {row['dry_run_rss_mib']} MiB | "
                  f"floor {row['floor_s']:.2f}s | x{row['ratio_to_floor']}", file=sys.stderr)
    return rows


def start_sandbox(db: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.sandbox", "--port", "0", "--db", str(db), "--token", TOKEN,
         "--daily-quota", "1000000", "--rate-limit", "100000"],
        stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    return proc, line.split("listening on ", 1)[1].split()[0]


def sandbox_stats(url: str) -> dict[str, Any]:
    import requests
    return requests.get(f"{url}/_sandbox/stats", headers={"Authorization": f"OAuth {TOKEN}"}, timeout=10).json()


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def valid_sheet(n: int, path: Path) -> Path:
    """n valid rows, every one unique by the 409 rule (distinct users), realistic titles and messages.

    Plain csv module, no pandas: the benchmark parent stays small (see p1)."""
    import csv
    amounts = ["0.50", "1", "1.5", "2.25", "10", "0.05", "7.1"]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "amount", "assignment_id", "private_comment", "public_title", "public_message",
                    "without_message"])
        w.writerows((f"{i + 1:032x}", amounts[i % len(amounts)], f"{i:010x}--{i * 7919:024x}",
                     f"project {i % 400} week {i % 52 + 1}", '{"EN": "Great work"}',
                     '{"EN": "Thank you for the careful labelling."}', "false") for i in range(n))
    return path


KIT_SCRIPT = r'''
import sys, time, json
from decimal import Decimal
import pandas as pd
from toloka.client import TolokaClient
from toloka.client.user_bonus import UserBonus
url, token, sheet, chunk = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
frame = pd.read_csv(sheet, dtype=str)
client = TolokaClient(token, url=url, retries=0)
t0 = time.perf_counter()
done = 0
for start in range(0, len(frame), chunk):
    part = frame.iloc[start:start + chunk]
    bonuses = [UserBonus(user_id=r.user_id, amount=Decimal(r.amount), public_title=json.loads(r.public_title),
                         public_message=json.loads(r.public_message), without_message=False,
                         assignment_id=r.assignment_id, private_comment=r.private_comment)
               for r in part.itertuples(index=False)]
    op = client.create_user_bonuses_async(bonuses, skip_invalid_items=True)
    op = client.wait_operation(op)
    done += op.details.success_count
open(sys.argv[5], "w").write(json.dumps({"success": done, "seconds": time.perf_counter() - t0}))
'''


def p2(n: int, work: Path, chunk: int = 5000, concurrency: int = 4) -> dict[str, Any]:
    sheet = valid_sheet(n, work / f"valid_{n}.csv")
    out: dict[str, Any] = {"bonuses": n, "chunk_size": chunk, "concurrency": concurrency}

    # payout run
    tmp = Path(tempfile.mkdtemp(dir=work))
    proc, url = start_sandbox(tmp / "sandbox.sqlite")
    try:
        env = dict(os.environ, TOLOKA_TOKEN=TOKEN)
        cmd = [sys.executable, "-m", "pipeline", "--log-json", "run", str(sheet), "--api-url", url,
               "--ledger", str(tmp / "ledger.sqlite"), "--out", str(tmp / "reports"),
               "--chunk-size", str(chunk), "--concurrency", str(concurrency), "--batch-id", sheet.stem]
        m = measure(cmd, env)
        stats = sandbox_stats(url)
    finally:
        stop(proc)
    summary = json.loads(next((tmp / "reports").glob("*/summary.json")).read_text())
    paid = summary["counts"].get("paid", 0)
    reqs = {k: v for k, v in stats["requests"].items() if not k.startswith("GET /_sandbox")}
    out["payout"] = {"wall_s": round(m["wall_s"], 3), "rss_mib": round(m["rss"] / 2**20), "paid": paid,
                     "bonuses_per_s": round(paid / m["wall_s"]), "requests": reqs,
                     "requests_total": sum(reqs.values()), "api_events": summary.get("api_events", {}),
                     "bonuses_created_server": stats.get("bonuses_created")}

    # toloka-kit baseline, fresh server
    tmp = Path(tempfile.mkdtemp(dir=work))
    proc, url = start_sandbox(tmp / "sandbox.sqlite")
    try:
        m = measure([sys.executable, "-c", KIT_SCRIPT, url, TOKEN, str(sheet), str(chunk), str(tmp / "kit.json")])
        kit = json.loads((tmp / "kit.json").read_text())
        stats = sandbox_stats(url)
    finally:
        stop(proc)
    reqs = {k: v for k, v in stats["requests"].items() if not k.startswith("GET /_sandbox")}
    out["toloka_kit"] = {"wall_s": round(m["wall_s"], 3), "rss_mib": round(m["rss"] / 2**20), "paid": kit["success"],
                         "bonuses_per_s": round(kit["success"] / m["wall_s"]), "requests": reqs,
                         "requests_total": sum(reqs.values())}
    out["speedup"] = round(out["payout"]["bonuses_per_s"] / max(out["toloka_kit"]["bonuses_per_s"], 1), 2)
    return out


def p3(work: Path, n: int = 100_000) -> dict[str, Any]:
    import bench_sandbox
    proc, url = start_sandbox(work / "p3.sqlite")
    try:
        create_s = bench_sandbox.create(url, n, 5000, 2)
        listed, list_s = bench_sandbox.list_all(url)
    finally:
        stop(proc)
    return {"async_create_per_s": round(n / create_s), "list_per_s": round(listed / list_s), "bonuses": n}


def verdicts(res: dict[str, Any]) -> dict[str, Any]:
    v: dict[str, Any] = {}
    p1rows = res.get("p1", [])
    big = [r for r in p1rows if r["rows"] == 1_000_000]
    if big:
        v["p1_1m_wall<=5s"] = all(r["dry_run_s"] <= 5 for r in big)
        v["p1_1m_rss<=1GiB"] = all(r["dry_run_rss_mib"] <= 1024 for r in big)
        for fmt in ("csv", "parquet"):
            small = [r for r in p1rows if r["rows"] == 10_000 and r["format"] == fmt]
            large = [r for r in big if r["format"] == fmt]
            if small and large:
                ratio = large[0]["dry_run_s"] / small[0]["dry_run_s"]
                v[f"p1_linear_{fmt}_1m/10k"] = round(ratio, 1)
        v["p1_linear<=120"] = all(v[k] <= 120 for k in v if k.startswith("p1_linear_"))
    if p1rows:
        v["p1_ratio_to_floor<=4"] = all(r["ratio_to_floor"] <= 4 for r in p1rows)
    if "p2" in res:
        p = res["p2"]
        v["p2_>=20k/s"] = p["payout"]["bonuses_per_s"] >= 20_000
        v["p2_>=3x_toloka_kit"] = p["speedup"] >= 3
        ops = -(-p["bonuses"] // p["chunk_size"])
        posts = sum(c for k, c in p["payout"]["requests"].items() if k.startswith("POST"))
        v["p2_requests"] = f"{p['payout']['requests_total']} total, {posts} POST for {ops} operations"
    if "p3" in res and "p2" in res:
        v["p3_sandbox_not_bottleneck"] = res["p3"]["async_create_per_s"] > res["p2"]["payout"]["bonuses_per_s"]
    return v


def table(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = [f"machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, Python {m['python']}, {m['os']}, "
             f"pandas {m['pandas']}, pyarrow {m['pyarrow']}", ""]
    if res.get("p1"):
        lines += ["P1 offline: `payout run --dry-run` vs floor (read + to_parquet), median wall, fresh child each",
                  "| rows | format | dry run s | peak RSS MiB | floor s | floor RSS MiB | ratio |",
                  "|---:|---|---:|---:|---:|---:|---:|"]
        for r in res["p1"]:
            lines.append(f"| {r['rows']:,} | {r['format']} | {r['dry_run_s']:.2f} | {r['dry_run_rss_mib']} | "
                         f"{r['floor_s']:.2f} | {r['floor_rss_mib']} | {r['ratio_to_floor']:.2f}x |")
        lines.append("")
    if res.get("p2"):
        p = res["p2"]
        lines += [f"P2 end to end: {p['bonuses']:,} bonuses, chunk {p['chunk_size']}, concurrency {p['concurrency']},"
                  " separate sandbox on loopback",
                  "| contender | wall s | bonuses/s | requests (by endpoint) | peak RSS MiB |", "|---|---:|---:|---|---:|"]
        for name, key in (("payout run", "payout"), ("toloka-kit 1.2.3 script", "toloka_kit")):
            c = p[key]
            reqs = ", ".join(f"{k} {v}" for k, v in sorted(c["requests"].items()))
            lines.append(f"| {name} | {c['wall_s']:.2f} | {c['bonuses_per_s']:,} | {c['requests_total']}: {reqs} | "
                         f"{c.get('rss_mib', '-')} |")
        lines += [f"speedup over toloka-kit: {p['speedup']}x", ""]
    if res.get("p3"):
        p = res["p3"]
        lines += ["P3 sandbox alone: async create " f"{p['async_create_per_s']:,} bonuses/s; "
                  f"listing {p['list_per_s']:,} items/s", ""]
    lines.append("targets: " + json.dumps(res.get("verdicts", {})))
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--skip-e2e", action="store_true", help="P1 only (no sandbox, no toloka-kit)")
    ap.add_argument("--skip-p1", action="store_true", help="P2/P3 only")
    ap.add_argument("--e2e-bonuses", type=int, default=100_000)
    ap.add_argument("--out", type=Path, default=REPO / "tests/perf/results/bench.json")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    res: dict[str, Any] = {"machine": machine(), "command": " ".join(["python", "tests/perf/bench.py"] + sys.argv[1:])}
    with tempfile.TemporaryDirectory(prefix="payout-bench-") as tmp:
        work = Path(tmp)
        if not args.skip_p1:
            res["p1"] = p1(sizes, work)
        if not args.skip_e2e:
            res["p2"] = p2(args.e2e_bonuses, work)
            res["p3"] = p3(work)
    res["verdicts"] = verdicts(res)
    print(table(res))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
