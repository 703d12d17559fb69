"""Shared parts of the chaos suite: sheets, `payout run` as a real subprocess, the exactly-once check, figures.

Every check reads the server's own listing (`GET /api/v1/user-bonuses`) and the ledger; nothing is mocked.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import requests
from payout_helpers import fault_counts, last_report, ledger_statuses, paid_multiset, post_count, request_count  # noqa: F401 (re-exported)
from sandbox_fixtures import TOKEN
from sheet_factory import row, write_csv
from waiting import wait_for  # noqa: F401 (re-exported)

REPO = Path(__file__).resolve().parents[2]
DEFAULT_TRIALS = 20
RUN_TIMEOUT_S = 300.0  # generous: a run that takes this long is a hang, which is a finding
MAX_RERUNS = 12  # bounded convergence: more re-runs than this is a finding, not bad luck


def trials(default: int = DEFAULT_TRIALS) -> int:
    """How many trials a chaos test runs: `PAYOUT_CHAOS_TRIALS` (the long run sets it to 200)."""
    return max(1, int(os.environ.get("PAYOUT_CHAOS_TRIALS", default)))


def timeout_for(n_trials: int, per_trial_s: float = 30.0) -> int:
    """A pytest-timeout budget that grows with N (the project default of 300 s fits N=20, not the long run)."""
    return int(max(300.0, 120.0 + per_trial_s * n_trials))


def base_seed() -> int:
    """`PAYOUT_CHAOS_SEED` shifts every seed of the suite (default 0), to explore other schedules."""
    return int(os.environ.get("PAYOUT_CHAOS_SEED", "0"))


# -- sheets -------------------------------------------------------------------------------------


@dataclass
class Sheet:
    """A CSV sheet and what must happen to it: `expected` is the (user, amount) multiset to be paid once."""

    path: Path
    n_rows: int
    expected: Counter[tuple[str, str]]
    invalid_rows: set[int]  # source_row numbers
    duplicate_rows: set[int]

    @property
    def final_code(self) -> int:
        """What a finished run exits with: 1 while invalid or duplicate rows are reported, else 0."""
        return 1 if self.invalid_rows or self.duplicate_rows else 0


def make_sheet(path: Path, n_valid: int, *, user_base: int, seed: int, n_invalid: int = 0,
               n_duplicates: int = 0) -> Sheet:
    """`n_valid` unique payable rows (distinct users from `user_base`), plus invalid rows and exact duplicates,
    shuffled with `seed`. Amounts vary so that a payment of the wrong row would show in the multiset."""
    rng = random.Random(seed)
    valid: list[dict[str, object]] = []
    for i in range(n_valid):
        cents = rng.randint(1, 9999)
        valid.append(row(user_base + i, amount=f"{cents // 100}.{cents % 100:02d}"))
    invalid = []
    for i in range(n_invalid):
        bad = rng.choice([{"amount": "abc"}, {"amount": "-1.00"}, {"amount": "1.234"}, {"user_id": "not-a-user"},
                          {"amount": "100000.00"}])
        invalid.append(row(user_base + n_valid + i, **bad))
    copies = [dict(valid[rng.randrange(n_valid)]) for _ in range(n_duplicates)]
    tagged = [("valid", r) for r in valid] + [("invalid", r) for r in invalid] + [("valid", r) for r in copies]
    rng.shuffle(tagged)
    seen: set[tuple[Any, ...]] = set()
    ordered: list[tuple[str, dict[str, object]]] = []
    for kind, r in tagged:  # keep-first: the first of identical rows is paid, later copies are duplicates
        ident = tuple(sorted(r.items()))
        ordered.append(("duplicate" if kind == "valid" and ident in seen else kind, r))
        seen.add(ident)
    write_csv(path, [r for _, r in ordered])
    expected: Counter[tuple[str, str]] = Counter()
    invalid, duplicate = set(), set()
    for pos, (kind, r) in enumerate(ordered):
        if kind == "invalid":
            invalid.add(pos + 2)
        elif kind == "duplicate":
            duplicate.add(pos + 2)
        else:
            expected[(str(r["user_id"]), f"{float(str(r['amount'])):.2f}")] += 1
    assert sum(expected.values()) == n_valid
    return Sheet(path, len(ordered), expected, invalid, duplicate)




# -- processes ----------------------------------------------------------------------------------


def write_config(path: Path) -> Path:
    """Fast retries and polls, so re-runs stay quick in CI (the logic is the same as production's)."""
    path.write_text("backoff_base_s = 0.05\nbackoff_max_s = 2.0\npoll_initial_s = 0.02\npoll_max_s = 0.3\n"
                    "request_timeout_s = 10.0\n")
    return path


@dataclass
class Payout:
    """`python -m pipeline --log-json run SHEET --api-url URL --ledger L --out O ...` against one server."""

    sheet: Path
    url: str
    ledger: Path
    out: Path
    config: Path
    chunk_size: int = 250
    concurrency: int = 4
    extra: list[str] = field(default_factory=list)

    def argv(self) -> list[str]:
        batch = [] if "--batch-id" in self.extra else ["--batch-id", self.sheet.stem]
        return [sys.executable, "-m", "pipeline", "--log-json", "run", str(self.sheet), "--api-url", self.url,
                "--ledger", str(self.ledger), "--out", str(self.out), "--config", str(self.config),
                "--chunk-size", str(self.chunk_size), "--concurrency", str(self.concurrency), *batch, *self.extra]

    def start(self, log_path: Path) -> subprocess.Popen[bytes]:
        env = {**os.environ, "TOLOKA_TOKEN": TOKEN,
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        with open(log_path, "ab") as fh:  # the child keeps its own descriptor
            return subprocess.Popen(self.argv(), env=env, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT)

    def run(self, log_path: Path, timeout: float = RUN_TIMEOUT_S) -> int:
        proc = self.start(log_path)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"payout run hung for {timeout:.0f} s; log: {log_path}") from None

    def run_until_done(self, log_path: Path, final_code: int = 0, max_reruns: int = MAX_RERUNS) -> list[int]:
        """Re-run until the run ends with `final_code` and nothing left pending/failed/unknown; return every
        exit code seen. `final_code` is 1 for a sheet holding invalid or duplicate rows (they stay reported).
        More than `max_reruns` runs fails the test: convergence must be bounded."""
        codes: list[int] = []
        while not codes or not (codes[-1] == final_code and settled(self.out)):
            assert len(codes) < max_reruns, f"no convergence after {codes}; log: {log_path}"
            codes.append(self.run(log_path))
        return codes


def settled(out: Path) -> bool:
    """The last finished run left nothing pending, failed or unknown."""
    counts = json.loads((last_report(out) / "summary.json").read_text())["counts"]
    return not any(counts.get(s, 0) for s in ("pending", "failed", "unknown"))


def kill9(proc: subprocess.Popen[bytes]) -> bool:
    """SIGKILL; True when the process was still running (the kill landed), False when it had exited."""
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    return True




# -- reading the truth --------------------------------------------------------------------------


def bonuses_since(url: str, after_id: int, token: str = TOKEN) -> list[dict[str, Any]]:
    """Every bonus the server created with id > `after_id`, through its own listing (paged by id).

    GETs may meet injected faults, so each page is retried; the listing itself is the source of truth.
    """
    out: list[dict[str, Any]] = []
    params: dict[str, Any] = {"sort": "id", "limit": 300, "id_gt": after_id}
    session = requests.Session()
    session.headers["Authorization"] = f"OAuth {token}"
    while True:
        for _ in range(200):
            try:
                resp = session.get(f"{url}/api/v1/user-bonuses", params=params, timeout=30)
            except requests.RequestException:
                time.sleep(0.05)
                continue
            if resp.status_code == 200:
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"could not list bonuses from {url}")
        page = resp.json()
        out += page["items"]
        if not page["has_more"]:
            return out
        params["id_gt"] = page["items"][-1]["id"]


def last_bonus_id(url: str, token: str = TOKEN) -> int:
    """The highest bonus id on the server now (0 when empty): later payments all have larger ids.

    One `sort=-id&limit=1` page, not the whole listing: the long run would otherwise read O(N^2) bonuses.
    """
    for _ in range(200):
        try:
            resp = requests.get(f"{url}/api/v1/user-bonuses", params={"sort": "-id", "limit": 1}, timeout=30,
                                headers={"Authorization": f"OAuth {token}"})
        except requests.RequestException:
            time.sleep(0.05)
            continue
        if resp.status_code == 200:
            items = resp.json()["items"]
            return int(items[0]["id"]) if items else 0
        time.sleep(0.05)
    raise AssertionError(f"could not read the last bonus id from {url}")


@dataclass
class Verdict:
    double_payments: int
    lost_rows: int
    extra_payments: int

    def add_to(self, figures: dict[str, int]) -> None:
        """Accumulate into a test's figures (extra payments count with lost rows: both break exactly once)."""
        figures["double_payments"] += self.double_payments
        figures["lost_rows"] += self.lost_rows + self.extra_payments


def check_exactly_once(sheet: Sheet, bonuses: list[dict[str, Any]], ledger: Path, out: Path) -> Verdict:
    """Every valid unique row paid exactly once on the server, nothing else paid, the ledger says `paid` for
    each, and the last run's rows.parquet accounts for every sheet row with the server's bonus ids."""
    paid = paid_multiset(bonuses)
    doubles = sum(max(0, paid[k] - n) for k, n in sheet.expected.items() if paid[k])
    lost = sum(max(0, n - paid[k]) for k, n in sheet.expected.items())
    extra = sum(v for k, v in paid.items() if k not in sheet.expected)
    verdict = Verdict(doubles, lost, extra)
    assert (doubles, lost, extra) == (0, 0, 0), f"{verdict}: paid {sum(paid.values())} of {len(sheet.expected)}"
    assert ledger_statuses(ledger) == {"paid": len(sheet.expected)}

    rows = pd.read_parquet(last_report(out) / "rows.parquet")
    assert len(rows) == sheet.n_rows
    assert sorted(rows["source_row"].tolist()) == list(range(2, sheet.n_rows + 2))
    by_row = dict(zip(rows["source_row"], rows["status"]))
    assert {r for r, s in by_row.items() if s == "invalid"} == sheet.invalid_rows
    assert {r for r, s in by_row.items() if s == "duplicate"} == sheet.duplicate_rows
    payable = rows[rows["status"].isin(["paid", "already_paid"])]
    assert len(payable) == len(sheet.expected)
    assert set(rows["status"]) <= {"paid", "already_paid", "invalid", "duplicate"}
    server_ids = {str(b["id"]): (b["user_id"], f"{b['amount']:.2f}") for b in bonuses}
    reported = payable["bonus_id"].astype(str).tolist()
    assert len(set(reported)) == len(reported), "two rows map to one bonus"
    assert set(reported) == set(server_ids), "report's bonus ids differ from the server's"
    for bid, user, amount in zip(payable["bonus_id"].astype(str), payable["user_id"], payable["amount"]):
        assert server_ids[bid] == (user, f"{float(amount):.2f}")
    return verdict


# -- figures ------------------------------------------------------------------------------------


def add_counts(total: Counter[str], more: dict[str, int]) -> None:
    for k, v in more.items():
        total[k] += int(v)


def record(test: str, figures: dict[str, Any]) -> dict[str, Any]:
    """One JSON line per test: appended to `$PAYOUT_CHAOS_REPORT` if set, always printed (see with -s)."""
    line = json.dumps({"test": test, **figures}, sort_keys=True, default=str)
    target = os.environ.get("PAYOUT_CHAOS_REPORT")
    if target:
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
    print(f"\nCHAOS {line}")
    return figures



# -- lost ledgers, shuffled sheets, signals (test_chaos_ledger_lost.py, test_chaos_sigterm.py) ----------------


def write_signal_config(path: Path, signal_grace_s: float) -> Path:
    """`write_config`'s fast settings plus a short `signal_grace_s` (production default 20 s)."""
    write_config(path)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(f"signal_grace_s = {signal_grace_s}\n")
    return path


def delete_ledger(path: Path) -> list[str]:
    """Lose the ledger as a new host would: the file, its WAL and shared memory, and its lock file.
    Returns the names of the files that existed."""
    gone = []
    for suffix in ("", "-wal", "-shm", "-journal", ".lock"):
        p = Path(f"{path}{suffix}")
        if p.exists():
            p.unlink()
            gone.append(p.name)
    return gone


def shuffled_sheet(sheet: Sheet, path: Path, seed: int) -> Sheet:
    """The same rows as `sheet` in another file order (`path`), with what must happen to them: the same
    multiset is owed; invalid rows stay invalid; of identical valid rows the first in the NEW order is the
    one kept (keep-first), the later ones are duplicates."""
    import csv

    with open(sheet.path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    tagged = [(pos + 2 in sheet.invalid_rows, r) for pos, r in enumerate(rows)]
    random.Random(seed).shuffle(tagged)
    write_csv(path, [r for _, r in tagged])
    seen: set[tuple[Any, ...]] = set()
    invalid, duplicate = set(), set()
    for pos, (is_invalid, r) in enumerate(tagged):
        ident = tuple(sorted(r.items()))
        if is_invalid:
            invalid.add(pos + 2)
        elif ident in seen:
            duplicate.add(pos + 2)
        seen.add(ident)
    out = Sheet(path, len(tagged), Counter(sheet.expected), invalid, duplicate)
    assert (len(out.invalid_rows), len(out.duplicate_rows)) == (len(sheet.invalid_rows), len(sheet.duplicate_rows))
    return out


def start_split(payout: Payout, log_path: Path, err_path: Path) -> subprocess.Popen[bytes]:
    """`payout.start`, but stderr to its own file (to check it for tracebacks) and stdout to `log_path`."""
    env = {**os.environ, "TOLOKA_TOKEN": TOKEN,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    with open(log_path, "ab") as out, open(err_path, "ab") as err:
        return subprocess.Popen(payout.argv(), env=env, cwd=REPO, stdout=out, stderr=err)


def payout_command(payout: Payout, command: str, *args: str, timeout: float = RUN_TIMEOUT_S
                   ) -> subprocess.CompletedProcess[str]:
    """Another `payout` command (e.g. `retry`, `audit`) on the same target, ledger, reports and config."""
    env = {**os.environ, "TOLOKA_TOKEN": TOKEN,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    argv = [sys.executable, "-m", "pipeline", "--log-json", command, "--api-url", payout.url,
            "--ledger", str(payout.ledger), "--out", str(payout.out), "--config", str(payout.config), *args]
    try:
        return subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"payout {command} hung for {timeout:.0f} s") from None


def lock_taken_while_alive(ledger: Path, proc: subprocess.Popen[bytes], poll_s: float = 0.005) -> int | None:
    """Wait for `proc` to end, trying the ledger's writer lock all along. Returns the file descriptor holding
    the lock if it could be taken while `proc` was still alive (the caller checks that nothing happened
    afterwards, then closes it), else None."""
    import fcntl

    fd = os.open(f"{ledger}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    while proc.poll() is None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            time.sleep(poll_s)
            continue
        if proc.poll() is None:
            return fd
        break
    os.close(fd)
    return None


def has_traceback(text: str) -> bool:
    return "Traceback (most recent call last)" in text


def lanes() -> int:
    """Trials run in this many parallel lanes, each with its own sandbox (`PAYOUT_CHAOS_LANES`, default 2): most
    of a trial is a `payout` process starting up or waiting, so two lanes keep a 2-core machine busy."""
    return max(1, int(os.environ.get("PAYOUT_CHAOS_LANES", "2")))


def run_in_lanes(n_trials: int, per_group: int, group_work: Any) -> list[Any]:
    """Split trials 0..n-1 into groups of `per_group` (each group gets its own server), run
    `group_work(group_no, trials: range)` for the groups on `lanes()` threads, and return the results in group
    order. The first failure is raised once the groups already running have ended; later groups do not start."""
    from concurrent.futures import ThreadPoolExecutor

    groups = [range(g, min(n_trials, g + per_group)) for g in range(0, n_trials, per_group)]
    with ThreadPoolExecutor(lanes(), thread_name_prefix="lane") as pool:
        futures = [pool.submit(group_work, i, g) for i, g in enumerate(groups)]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def merge_tallies(tallies: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum per-group tallies: Counters add up, lists concatenate."""
    out: dict[str, Any] = {}
    for tally in tallies:
        for key, value in tally.items():
            if isinstance(value, list):
                out.setdefault(key, []).extend(value)
            else:
                out.setdefault(key, Counter()).update(value)
    return out
