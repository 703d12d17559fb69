"""Shared parts of the chaos suite: sheets, `payout run` as a real subprocess, the exactly-once check, figures.

Every check reads the server's own listing (`GET /api/v1/user-bonuses`) and the ledger; nothing is mocked.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import requests

from payout_helpers import paid_multiset
from sandbox_fixtures import TOKEN, stats
from sheet_factory import row, write_csv

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


def wait_for(predicate: Any, timeout: float = 120.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.01)


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


def ledger_statuses(path: Path) -> dict[str, int]:
    """Rows per ledger status, plus `submitted`: planned rows whose operation the server already holds.

    Rows a fresh ledger recovered from other batches on the same server (batch '') are not counted."""
    if not path.exists():
        return {}
    with sqlite3.connect(path, timeout=30) as db:
        try:
            counts = dict(db.execute("SELECT status, count(*) FROM rows WHERE batch_id != '' GROUP BY status"
                                     ).fetchall())
            [(submitted,)] = db.execute(
                "SELECT count(*) FROM rows r JOIN operations o ON r.operation_id = o.operation_id"
                " WHERE r.status = 'planned' AND o.state = 'submitted'").fetchall()
        except sqlite3.OperationalError:  # killed before the schema existed
            return {}
    return {**counts, "submitted": submitted} if submitted else counts


def last_report(out: Path) -> Path:
    """The report folder of the last finished run (run ids sort by time; a killed run may leave none)."""
    done = sorted(p.parent for p in out.glob("*/summary.json"))
    assert done, f"no finished run under {out}"
    return done[-1]


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


def fault_counts(url: str) -> dict[str, int]:
    return dict(stats(url).get("faults", {}))


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

