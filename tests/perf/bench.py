"""Benchmarks of issue 11: P1 offline dry run vs the floor, P2 end to end vs two toloka-kit scripts, P3 the sandbox.

    python tests/perf/bench.py [--sizes 10000,100000,1000000] [--xlsx-sizes 100000] [--skip-p1] [--skip-p2] [--skip-p3]
                               [--repeats 5] [--repeats-1m 3] [--p2-repeats 3] [--out tests/perf/results/bench.json]

Sheets are shaped like finance's (make_sheet.py, shape `finance`: ~1 % invalid amounts, ~1 % exact duplicate
rows, a unique private_comment per row, multi-language JSON titles and messages, varied amounts and users).
They are generated once into `--sheets` (default tests/perf/data/<hash of make_sheet.py>/, git-ignored).

P1: `payout run SHEET --dry-run` in a fresh child, against the floor `pandas.read_csv(engine="pyarrow")` (or
`read_parquet`) + `to_parquet` of the same file in a fresh child; the two alternate, median wall of each, the
child's own peak RSS (os.wait4). Target at 1M rows: dry run <= 3x the floor and <= 1 GiB peak RSS.

P1 also reads the same sheet saved as .xlsx (`--xlsx-sizes`, default 100,000 rows: amounts that are numbers as
number cells, shared strings, as Excel writes it), against the floor `pandas.read_excel(engine="calamine")`.
`--sizes "" --skip-p2 --skip-p3` runs only that; `--commit REV` measures an older reader (e.g. openpyxl's).

P2: 100,000 valid bonuses (finance shape without invalid or duplicate rows) through `payout run --chunk-size 5000
--concurrency 4`, `kit_sequential.py` (one operation at a time) and `kit_threads.py` (4 threads, 4 operations in
flight), each against its own fresh `payout sandbox` process (same flags); rounds alternate the three, median
wall of the whole child process. bonuses/s = bonuses the contender reports paid / that wall. Targets: >= 3x the
sequential script, >= 1.5x the 4-thread one, >= 20,000/s (on a quiet machine).

Every measurement records the 1-minute load average at its start and how busy the CPUs were in the 2 s before
it; `--quiet 0.25` waits (up to `--quiet-wait` s) until other work used less than a quarter of the CPUs.
The parent never imports pandas, so each child's ru_maxrss is its own.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CODE = REPO  # the folder whose pipeline/ the children run (cwd): REPO, or a snapshot of --commit
sys.path.insert(0, str(HERE))

TOKEN = "bench"
GIB = 1024**3
SANDBOX_FLAGS = ["--rate-limit", "100000", "--daily-quota", "1000000"]
TARGETS = {"p1_floor_ratio": 3.0, "p1_rss_mib": 1024, "p2_vs_kit_sequential": 3.0, "p2_vs_kit_threads": 1.5,
           "p2_bonuses_per_s": 20_000}

FLOOR_CSV = "import sys, pandas as pd; pd.read_csv(sys.argv[1], engine='pyarrow').to_parquet(sys.argv[2])"
FLOOR_PARQUET = "import sys, pandas as pd; pd.read_parquet(sys.argv[1]).to_parquet(sys.argv[2])"
FLOOR_XLSX = ("import sys, pandas as pd; pd.read_excel(sys.argv[1], engine='calamine', dtype=str)"
              ".to_parquet(sys.argv[2])")


# --- environment -------------------------------------------------------------------------------


def load1() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def _cpu_times() -> tuple[int, int]:
    """(idle, total) jiffies of all CPUs since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return values[3] + values[4], sum(values[:8])


def busy_share(window_s: float = 2.0) -> float:
    """Share of all CPUs busy during the last `window_s` seconds (0..1), others' work included."""
    idle0, total0 = _cpu_times()
    time.sleep(window_s)
    idle1, total1 = _cpu_times()
    return 1 - (idle1 - idle0) / max(total1 - total0, 1)


def wait_quiet(limit: float | None, patience_s: float) -> tuple[float, float]:
    """(1-minute load average, CPU busy share over 2 s) just before a measurement, after waiting (at most
    patience_s) for the busy share to fall below `limit` (0..1, e.g. 0.25: other work uses half a core of two)."""
    deadline = time.monotonic() + patience_s
    busy = busy_share()
    while limit is not None and busy >= limit and time.monotonic() < deadline:
        busy = busy_share()
    return load1(), busy


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()


def git_commit(rev: str | None) -> dict[str, Any]:
    """What is measured: a snapshot of `rev`'s pipeline/, or the working tree (HEAD + any local changes)."""
    commit = git("rev-parse", rev or "HEAD")
    return {"commit": commit, "subject": git("log", "-1", "--format=%s", commit)[:100],
            "snapshot": bool(rev), "pipeline_dirty": False if rev else bool(git("status", "--porcelain", "--", "pipeline"))}


def snapshot(rev: str, into: Path) -> Path:
    """`rev`'s pipeline/ package, exported with git archive: others' edits to the working tree do not leak in."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", rev, "pipeline"], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


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
            "pandas": version("pandas"), "pyarrow": version("pyarrow"), "toloka-kit": version("toloka-kit")}


# --- one measurement ---------------------------------------------------------------------------


class Runner:
    def __init__(self, quiet_busy: float | None, quiet_wait: float) -> None:
        self.quiet_busy = quiet_busy
        self.quiet_wait = quiet_wait
        self.loads: list[float] = []
        self.busy: list[float] = []

    def measure(self, cmd: list[str], env: dict[str, str] | None = None, ok: tuple[int, ...] = (0, 1)
                ) -> dict[str, float]:
        """Wall s, CPU s (user+sys) and peak RSS (bytes) of one fresh child; fails loudly on a crash."""
        load, busy = wait_quiet(self.quiet_busy, self.quiet_wait)
        self.loads.append(load)
        self.busy.append(busy)
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            started = time.perf_counter()
            proc = subprocess.Popen(cmd, cwd=CODE, env=env, stdout=out, stderr=err)
            _, status, usage = os.wait4(proc.pid, 0)  # (not proc.wait: wait4 gives this child's own rusage)
            wall = time.perf_counter() - started
            proc.returncode = code = os.waitstatus_to_exitcode(status)
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
        if code not in ok:  # 1 = rows need attention (the invalid/duplicate mix): expected for P1
            raise RuntimeError(f"{cmd} exited {code}:\n{stderr.decode(errors='replace')[-3000:]}")
        return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "rss": usage.ru_maxrss * 1024,
                "load1": load, "busy": round(busy, 2), "stdout": stdout.decode(errors="replace")}


def _median(runs: list[dict[str, float]]) -> dict[str, Any]:
    return {"wall_s": round(statistics.median(r["wall_s"] for r in runs), 3),
            "cpu_s": round(statistics.median(r["cpu_s"] for r in runs), 3),
            "rss_mib": round(max(r["rss"] for r in runs) / 2**20),
            "runs_s": [round(r["wall_s"], 3) for r in runs], "loads": [r["load1"] for r in runs],
            "busy_before": [r["busy"] for r in runs]}


# --- sheets ------------------------------------------------------------------------------------


def sheets_dir(base: Path | None) -> Path:
    digest = hashlib.sha256((HERE / "make_sheet.py").read_bytes()).hexdigest()[:10]
    return (base or HERE / "data") / digest


def sheet(folder: Path, rows: int, *, valid_only: bool = False) -> tuple[Path, Path]:
    """(csv, parquet) of a finance-shaped sheet, generated in a child (the parent stays small) if missing."""
    stem = f"valid_{rows}" if valid_only else f"sheet_{rows}"
    csv_path, pq_path = folder / f"{stem}.csv", folder / f"{stem}.parquet"
    if not (csv_path.exists() and pq_path.exists()):
        t0 = time.perf_counter()
        extra = ["--invalid", "0", "--duplicates", "0"] if valid_only else []
        subprocess.run([sys.executable, str(HERE / "make_sheet.py"), "--rows", str(rows), "--out", str(folder),
                        "--name", stem, *extra], check=True, cwd=REPO, stdout=subprocess.DEVNULL)
        print(f"  generated {stem} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return csv_path, pq_path


def xlsx_sheet(folder: Path, rows: int) -> Path:
    """The finance-shaped sheet of `rows` as .xlsx (make_sheet.write_xlsx), generated in a child if missing."""
    path = folder / f"sheet_{rows}.xlsx"
    if not path.exists():
        t0 = time.perf_counter()
        subprocess.run([sys.executable, str(HERE / "make_sheet.py"), "--rows", str(rows), "--out", str(folder),
                        "--name", f"sheet_{rows}", "--formats", "xlsx"], check=True, cwd=REPO, stdout=subprocess.DEVNULL)
        print(f"  generated {path.name} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return path


# --- P1 ----------------------------------------------------------------------------------------


def dry_run_cmd(path: Path, tmp: Path) -> list[str]:
    return [sys.executable, "-m", "pipeline", "--log-json", "run", str(path), "--dry-run",
            "--data-dir", str(tmp / "data"), "--ledger", str(tmp / "ledger.sqlite"), "--out", str(tmp / "reports")]


def p1(runner: Runner, sizes: list[int], folder: Path, work: Path, repeats: int, repeats_1m: int,
       xlsx_sizes: tuple[int, ...] = ()) -> list[dict[str, Any]]:
    rows = []
    env = dict(os.environ, PAYOUT_DATA_DIR=str(work / "p1-data"))
    cases = []
    for n in sizes:
        csv_path, pq_path = sheet(folder, n)
        cases += [(n, "csv", csv_path, FLOOR_CSV), (n, "parquet", pq_path, FLOOR_PARQUET)]
    cases += [(n, "xlsx", xlsx_sheet(folder, n), FLOOR_XLSX) for n in xlsx_sizes]
    for n, fmt, path, floor_code in cases:
        reps = repeats if n < 1_000_000 else repeats_1m
        dry_runs, floor_runs = [], []
        for _ in range(reps):  # alternate, so a burst of load from elsewhere hits both sides
            tmp = Path(tempfile.mkdtemp(dir=work))
            dry_runs.append(runner.measure(dry_run_cmd(path, tmp), env))
            floor_runs.append(runner.measure([sys.executable, "-c", floor_code, str(path),
                                              str(tmp / "floor.parquet")]))
            shutil.rmtree(tmp)
        dry, floor = _median(dry_runs), _median(floor_runs)
        row = {"rows": n, "format": fmt, "repeats": reps, "bytes": path.stat().st_size, "dry_run": dry,
               "floor": floor, "ratio_to_floor": round(dry["wall_s"] / floor["wall_s"], 2)}
        rows.append(row)
        print(f"  P1 {n:>9,} {fmt:<7} dry {dry['wall_s']:.2f}s {dry['rss_mib']} MiB | floor "
              f"{floor['wall_s']:.2f}s | x{row['ratio_to_floor']} | load {min(dry['loads']):.1f}-"
              f"{max(dry['loads']):.1f} busy {max(dry['busy_before'])}", file=sys.stderr)
    return rows


# --- P2 ----------------------------------------------------------------------------------------


def start_sandbox(db: Path) -> tuple[subprocess.Popen[str], str]:
    """A separate `payout sandbox` process on loopback; its URL."""
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "sandbox", "--port", "0", "--db", str(db),
                             "--token", TOKEN, *SANDBOX_FLAGS], stdout=subprocess.PIPE, text=True, cwd=CODE)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on " not in line:
        proc.kill()
        raise RuntimeError(f"sandbox did not start: {line!r}")
    return proc, line.split("listening on ", 1)[1].split()[0]


def sandbox_stats(url: str) -> dict[str, Any]:
    import urllib.request
    req = urllib.request.Request(f"{url}/_sandbox/stats", headers={"Authorization": f"OAuth {TOKEN}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def p2_once(runner: Runner, who: str, sheet_csv: Path, work: Path, chunk: int, concurrency: int
            ) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(dir=work))
    proc, url = start_sandbox(tmp / "sandbox.sqlite")
    try:
        env = dict(os.environ, TOLOKA_TOKEN=TOKEN, PAYOUT_DATA_DIR=str(tmp / "data"))
        if who == "payout":
            cmd = [sys.executable, "-m", "pipeline", "--log-json", "run", str(sheet_csv), "--api-url", url,
                   "--data-dir", str(tmp / "data"), "--ledger", str(tmp / "ledger.sqlite"),
                   "--out", str(tmp / "reports"), "--chunk-size", str(chunk), "--concurrency", str(concurrency),
                   "--batch-id", f"bench-{sheet_csv.stem}"]
            m = runner.measure(cmd, env, ok=(0,))
            summary = json.loads(next((tmp / "reports").glob("*/summary.json")).read_text())
            paid = summary["counts"].get("paid", 0)
            extra: dict[str, Any] = {"api_events": summary.get("api_events", {})}
        else:
            script = HERE / f"{who}.py"
            cmd = [sys.executable, str(script), str(sheet_csv), "--url", url, "--token", TOKEN,
                   "--chunk-size", str(chunk), "--json", str(tmp / "kit.json")]
            if who == "kit_threads":
                cmd += ["--threads", str(concurrency)]
            m = runner.measure(cmd, env, ok=(0,))
            extra = json.loads((tmp / "kit.json").read_text())
            paid = extra["success"]
        stats = sandbox_stats(url)
        server_cpu = cpu_seconds(proc.pid)
    finally:
        stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    reqs = {k: v for k, v in stats["requests"].items() if not k.startswith("GET /_sandbox")}
    return {"wall_s": m["wall_s"], "cpu_s": m["cpu_s"], "rss": m["rss"], "load1": m["load1"], "busy": m["busy"],
            "paid": paid,
            "server_created": stats.get("bonuses_created"), "server_cpu_s": round(server_cpu, 2),
            "requests": reqs, "requests_total": sum(reqs.values()), "detail": extra}


def p2(runner: Runner, n: int, folder: Path, work: Path, rounds: int, chunk: int = 5000, concurrency: int = 4
       ) -> dict[str, Any]:
    sheet_csv, _ = sheet(folder, n, valid_only=True)
    out: dict[str, Any] = {"bonuses": n, "chunk_size": chunk, "concurrency": concurrency, "rounds": rounds,
                           "sandbox_flags": SANDBOX_FLAGS}
    runs: dict[str, list[dict[str, Any]]] = {"payout": [], "kit_sequential": [], "kit_threads": []}
    for r in range(rounds):
        for who, done in runs.items():
            res = p2_once(runner, who, sheet_csv, work, chunk, concurrency)
            if res["paid"] != n or res["server_created"] != n:
                raise RuntimeError(f"P2 {who}: paid {res['paid']}, server created {res['server_created']}, "
                                   f"expected {n}")
            done.append(res)
            print(f"  P2 round {r + 1} {who:<15} {res['wall_s']:.2f}s {n / res['wall_s']:,.0f}/s cpu "
                  f"{res['cpu_s']:.1f}s server cpu {res['server_cpu_s']:.1f}s load {res['load1']:.1f} busy {res['busy']}",
                  file=sys.stderr)
    for who, rs in runs.items():
        med = _median(rs)
        last = rs[-1]
        out[who] = {**med, "bonuses_per_s": round(n / med["wall_s"]),
                    "server_cpu_s": statistics.median(r["server_cpu_s"] for r in rs),
                    "requests": last["requests"], "requests_total": last["requests_total"],
                    "detail": last["detail"]}
    pay = out["payout"]["bonuses_per_s"]
    out["vs_kit_sequential"] = round(pay / out["kit_sequential"]["bonuses_per_s"], 2)
    out["vs_kit_threads"] = round(pay / out["kit_threads"]["bonuses_per_s"], 2)
    return out


# --- P3 ----------------------------------------------------------------------------------------


def p3(work: Path, n: int = 100_000) -> dict[str, Any]:
    import bench_sandbox
    proc, url = start_sandbox(work / "p3.sqlite")
    try:
        create_s = bench_sandbox.create(url, n, 5000, 2)
        listed, list_s = bench_sandbox.list_all(url)
    finally:
        stop(proc)
    return {"async_create_per_s": round(n / create_s), "list_per_s": round(listed / list_s), "bonuses": n}


# --- verdicts and tables -----------------------------------------------------------------------


def verdicts(res: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for r in res.get("p1", []):
        if r["rows"] == 1_000_000:
            out.append({"target": f"P1 1M {r['format']}: dry run <= 3x the floor",
                        "result": f"{r['ratio_to_floor']:.2f}x ({r['dry_run']['wall_s']:.2f} s vs "
                                  f"{r['floor']['wall_s']:.2f} s)",
                        "met": r["ratio_to_floor"] <= TARGETS["p1_floor_ratio"]})
            out.append({"target": f"P1 1M {r['format']}: peak RSS <= 1 GiB",
                        "result": f"{r['dry_run']['rss_mib']} MiB", "met": r["dry_run"]["rss_mib"] <= 1024})
    if "p2" in res:
        p = res["p2"]
        out.append({"target": "P2 >= 3x kit_sequential", "result": f"{p['vs_kit_sequential']:.2f}x",
                    "met": p["vs_kit_sequential"] >= TARGETS["p2_vs_kit_sequential"]})
        out.append({"target": "P2 >= 1.5x kit_threads (4 in flight)", "result": f"{p['vs_kit_threads']:.2f}x",
                    "met": p["vs_kit_threads"] >= TARGETS["p2_vs_kit_threads"]})
        out.append({"target": "P2 >= 20,000 bonuses/s", "result": f"{p['payout']['bonuses_per_s']:,}/s",
                    "met": p["payout"]["bonuses_per_s"] >= TARGETS["p2_bonuses_per_s"]})
    return out


def table(res: dict[str, Any]) -> str:
    m, g = res["machine"], res["git"]
    what = " + local pipeline/ changes" if g["pipeline_dirty"] else ""
    what += ", pipeline/ from a git archive snapshot" if g.get("snapshot") else ""
    lines = [
        f"commit {g['commit'][:10]} ({g['subject']}){what}",
        (f"machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, Python {m['python']}, {m['os']}, "
         f"pandas {m['pandas']}, pyarrow {m['pyarrow']}, toloka-kit {m['toloka-kit']}"),
        (f"load average: {' '.join(res['load_start'])} at the start, {' '.join(res['load_end'])} at the end; 1-min "
         f"{res['load_min']:.2f}-{res['load_max']:.2f} at the measurements' starts; CPUs busy in the 2 s before each: "
         f"median {res['busy_before_median']}, max {res['busy_before_max']}"),
        "",
    ]
    if res.get("p1"):
        lines += [
            "P1 `payout run --dry-run` vs the floor (read + to_parquet), fresh child each, median wall",
            "| rows | format | runs | dry run s | CPU s | peak RSS MiB | floor s | CPU s | RSS MiB | ratio | CPU ratio |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in res["p1"]:
            d, f = r["dry_run"], r["floor"]
            lines.append(f"| {r['rows']:,} | {r['format']} | {r['repeats']} | {d['wall_s']:.2f} | {d['cpu_s']:.2f} | "
                         f"{d['rss_mib']} | {f['wall_s']:.2f} | {f['cpu_s']:.2f} | {f['rss_mib']} | "
                         f"{r['ratio_to_floor']:.2f}x | {d['cpu_s'] / f['cpu_s']:.2f}x |")
        lines.append("")
    if res.get("p2"):
        p = res["p2"]
        lines += [
            (f"P2 {p['bonuses']:,} bonuses, chunk {p['chunk_size']}, each against its own fresh `payout sandbox`, "
             f"median of {p['rounds']} rounds"),
            "| contender | wall s | bonuses/s | payout is | client CPU s | server CPU s | peak RSS MiB | requests |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for name, key in (("`payout run --concurrency 4`", "payout"),
                          ("kit_sequential.py (1 in flight)", "kit_sequential"),
                          ("kit_threads.py (4 threads)", "kit_threads")):
            c = p[key]
            ratio = "-" if key == "payout" else f"{p['vs_' + key]:.2f}x"
            reqs = " + ".join(f"{v} {k.replace('/api/v1/', '')}" for k, v in sorted(c["requests"].items()))
            lines.append(f"| {name} | {c['wall_s']:.2f} | {c['bonuses_per_s']:,} | {ratio} | {c['cpu_s']:.1f} | "
                         f"{c['server_cpu_s']:.1f} | {c['rss_mib']} | {c['requests_total']} = {reqs} |")
        lines.append("")
    if res.get("p3"):
        p = res["p3"]
        lines += [(f"P3 sandbox alone: async create {p['async_create_per_s']:,} bonuses/s; listing "
                   f"{p['list_per_s']:,} items/s"), ""]
    if res.get("verdicts"):
        lines += ["| target | result | met? |", "|---|---|---|"]
        lines += [f"| {v['target']} | {v['result']} | {'yes' if v['met'] else '**no**'} |" for v in res["verdicts"]]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000", help="P1 sheet sizes")
    ap.add_argument("--xlsx-sizes", default="100000", help="P1 .xlsx sheet sizes ('' for none)")
    ap.add_argument("--skip-p1", action="store_true")
    ap.add_argument("--skip-p2", "--skip-e2e", dest="skip_p2", action="store_true", help="no P2 (no sandbox/kit)")
    ap.add_argument("--skip-p3", action="store_true")
    ap.add_argument("--repeats", type=int, default=5, help="P1 runs per measurement below 1M rows (median)")
    ap.add_argument("--repeats-1m", type=int, default=3, help="P1 runs per measurement at 1M rows and above")
    ap.add_argument("--p2-bonuses", "--e2e-bonuses", dest="p2_bonuses", type=int, default=100_000)
    ap.add_argument("--p2-repeats", type=int, default=3, help="P2 rounds (each runs the three contenders)")
    ap.add_argument("--sheets", type=Path, help="where generated sheets are kept (default tests/perf/data)")
    ap.add_argument("--quiet", type=float, metavar="SHARE",
                    help="before each measurement, wait until the CPUs were less than SHARE busy (0..1) for 2 s")
    ap.add_argument("--quiet-wait", type=float, default=60, help="longest such wait, seconds (default 60)")
    ap.add_argument("--commit", help="measure this commit's pipeline/ (a git archive snapshot) instead of the "
                                      "working tree")
    ap.add_argument("--out", type=Path, default=HERE / "results/bench.json")
    args = ap.parse_args()
    global CODE
    sizes = [int(s) for s in args.sizes.split(",") if s]
    runner = Runner(args.quiet, args.quiet_wait)
    res: dict[str, Any] = {"command": " ".join(["python", "tests/perf/bench.py"] + sys.argv[1:]),
                           "git": git_commit(args.commit), "machine": machine(),
                           "load_start": Path("/proc/loadavg").read_text().split()[:3],
                           "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    folder = sheets_dir(args.sheets)
    with tempfile.TemporaryDirectory(prefix="payout-bench-") as tmp:
        work = Path(tmp)
        if args.commit:
            CODE = snapshot(args.commit, work / "code")
        if not args.skip_p1:
            xlsx_sizes = tuple(int(s) for s in args.xlsx_sizes.split(",") if s)
            res["p1"] = p1(runner, sizes, folder, work, args.repeats, args.repeats_1m, xlsx_sizes)
        if not args.skip_p2:
            res["p2"] = p2(runner, args.p2_bonuses, folder, work, args.p2_repeats)
        if not args.skip_p3:
            res["p3"] = p3(work)
    res["load_min"], res["load_max"] = (min(runner.loads), max(runner.loads)) if runner.loads else (0.0, 0.0)
    res["busy_before_median"] = round(statistics.median(runner.busy), 2) if runner.busy else None
    res["busy_before_max"] = max(runner.busy) if runner.busy else None
    res["load_end"] = Path("/proc/loadavg").read_text().split()[:3]
    res["verdicts"] = verdicts(res)
    print(table(res))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
