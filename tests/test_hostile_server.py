"""Issue 8, end to end: `payout run` against a hostile server (tests/hostile_proxy.py in front of a real sandbox),
one test per broken answer.

For each: the run ends in bounded time, with a documented exit code and no traceback; its report never calls a
row `paid` that the server did not show paid, nor `failed` where the server paid it; then, against the honest
server (same proxy URL: the ledger is bound to that target), re-runs leave every row paid exactly once on the
server's own listing — rows left `unknown` (never resent, because the server may have paid them) are the ones
whose bonus the server holds, and `payout audit` names each of them.

No sleeps for synchronisation: the proxy counts requests, and the sandbox's own operations are waited for by
asking the sandbox.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import structlog
from hostile_proxy import HostileProxy, hostile  # noqa: F401  (the fixture)
from payout_helpers import paid_multiset, server_bonuses
from sandbox_fixtures import api_session, set_faults, wait_operation
from sheet_factory import row, uid, write_csv

from pipeline import logs
from pipeline.report import read_rows

BOUND_S = 30.0  # one `payout` invocation; a hang is the bug (the slowest mode here takes a few seconds)
AMOUNTS = ["1.50", "2.25", "1.50", "3.00", "0.75", "1.50", "4.10", "2.25"]  # some rows share an amount
CHUNK = 3  # 8 rows -> 3 operations, all in flight at once (concurrency 4)
RERUNS = 3  # honest re-runs at most, while rows remain pending or refused
ALL, NONE, SOME = "all", "none", "some"  # how many rows the server paid during the hostile run


@dataclass(frozen=True)
class Case:
    mode: str
    codes: frozenset[int]  # exit codes the hostile run may end with
    statuses: frozenset[str]  # report statuses the hostile run may leave
    server_paid: str  # ALL, NONE or SOME of the rows, on the server's listing after the hostile run
    bound: bool = False  # the ledger already read the target (an honest `payout recover`) before the lie
    deadline_s: float = 2.0
    faults: str = ""  # sandbox faults during the hostile run
    opts: tuple[tuple[str, Any], ...] = ()
    id: str = ""


CASES = [
    # the log says success but names no bonus: the server paid; nothing definitive -> unknown, never resent
    Case("success_without_id", frozenset({1}), frozenset({"unknown"}), ALL),
    # operation said FAIL with an empty log while the server paid: unknown (never `failed`), never resent
    Case("fail_empty_log", frozenset({1}), frozenset({"unknown"}), ALL),
    # the same lie over an operation that really failed: nothing paid, so the rows must be paid by a re-run
    Case("fail_empty_log", frozenset({1}), frozenset({"unknown"}), NONE, faults="op_fail=1",
         id="fail_empty_log-server_failed"),
    # the POST committed, then came back as an HTML 404: the GET by operation id finds it, nothing resent
    Case("post_html_404", frozenset({0}), frozenset({"paid"}), ALL),
    # every answer dribbles: a fresh ledger cannot read the target's operations, so nothing is sent ...
    Case("drip_body", frozenset({3}), frozenset({"pending"}), NONE, deadline_s=1.0, opts=(("interval_s", 0.2),),
         id="drip_body-fresh_ledger"),
    # ... and on a ledger that has read them, the POSTs leave (and commit) but no answer arrives in time
    Case("drip_body", frozenset({3}), frozenset({"pending"}), SOME, deadline_s=1.0, opts=(("interval_s", 0.2),),
         bound=True, id="drip_body-bound_ledger"),
    Case("list_instead_of_operation", frozenset({3}), frozenset({"pending"}), SOME),
    Case("stuck_running", frozenset({3}), frozenset({"pending"}), SOME),
    # "already exists" for a POST that never reached the server, then "does not exist": nothing paid
    Case("exists_then_missing", frozenset({3}), frozenset({"pending"}), NONE),
    # the log's echo names another user and amount: the server paid what we sent; unknown, never resent
    Case("log_mismatch", frozenset({1}), frozenset({"unknown"}), ALL),
    Case("html_404_get", frozenset({3}), frozenset({"pending"}), SOME),
    Case("not_json", frozenset({3}), frozenset({"pending"}), NONE, id="not_json-fresh_ledger"),
    Case("not_json", frozenset({3}), frozenset({"pending"}), SOME, bound=True, id="not_json-bound_ledger"),
]


# -- helpers ----------------------------------------------------------------------------------------------

def fast_config(path: Path, deadline_s: float) -> Path:
    path.write_text(
        "max_retries = 2\nbackoff_base_s = 0.01\nbackoff_max_s = 0.05\n"
        f"request_timeout_s = {deadline_s}\nrequest_deadline_s = {deadline_s}\n"
        "max_wait_s = 2.0\npoll_initial_s = 0.02\npoll_max_s = 0.1\nrecover_window_days = 1\n",
        encoding="utf-8")
    return path


def expected_multiset() -> Counter[tuple[str, str]]:
    return Counter((uid(i), a) for i, a in enumerate(AMOUNTS))


class Runner:
    """`payout <cmd>` in-process with the test's ledger and report folder: exit code, output, time, new report."""

    def __init__(self, payout, capfd, out: Path) -> None:
        self.payout, self.capfd, self.out = payout, capfd, out

    def __call__(self, *args: str, ledger: Path | None = None) -> tuple[int, str, float, Path | None]:
        before = set(self.out.iterdir()) if self.out.exists() else set()
        self.capfd.readouterr()
        start = time.monotonic()
        code = self.payout(*args, ledger=ledger)
        elapsed = time.monotonic() - start
        captured = self.capfd.readouterr()
        new = sorted(set(self.out.iterdir()) - before) if self.out.exists() else []
        return code, captured.out + captured.err, elapsed, (new[-1] if new else None)


@pytest.fixture
def run(payout, capfd, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Runner]:
    """A Runner whose output includes the log lines: the CLI's log stream defaults to the sys.stderr of import
    time, so it is pointed at the captured one (a traceback in a log line is seen too), and structlog's
    configuration is put back afterwards (later tests must not log into this test's closed capture)."""
    saved = structlog.get_config()
    configure = logs.configure_logging
    monkeypatch.setattr(logs, "configure_logging", lambda **kw: configure(**{**kw, "stream": sys.stderr}))
    yield Runner(payout, capfd, tmp_path / "reports")
    structlog.configure(**saved)


def settle_sandbox(sandbox_url: str) -> None:
    """Wait (by asking the sandbox itself, bounded) until every operation it holds is finished: only then does
    its listing show everything the hostile run made it pay."""
    session = api_session()
    ops = session.get(f"{sandbox_url}/api/v1/operations", params={"limit": 500}, timeout=10).json()["items"]
    for op in ops:
        wait_operation(session, sandbox_url, op["id"], timeout=10)


def held_by_server(rows: pd.DataFrame, sandbox_url: str) -> tuple[pd.Series, dict[str, dict[str, Any]]]:
    """Per report row: does the server hold a bonus for its (user, amount)? And the server's bonuses by id."""
    bonuses = server_bonuses(sandbox_url)
    paid = paid_multiset(bonuses)
    held = pd.Series([paid[(u, f"{c / 100:.2f}")] > 0 for u, c in zip(rows["user_id"], rows["amount_cents"])],
                     index=rows.index)
    return held, {str(b["id"]): b for b in bonuses}


def assert_truthful(rows: pd.DataFrame, sandbox_url: str) -> pd.Series:
    """Nothing in the report that the server did not show: `paid` names a bonus the server holds for that user
    and amount; `failed` only where the server holds none. Returns, per row, whether the server holds its bonus."""
    held, by_id = held_by_server(rows, sandbox_url)
    for r in rows.itertuples(index=False):
        if r.status == "paid":
            bonus = by_id.get(str(r.bonus_id))
            assert bonus is not None, f"row {r.source_row} reported paid with bonus {r.bonus_id} the server lacks"
            assert (bonus["user_id"], f"{bonus['amount']:.2f}") == (r.user_id, f"{r.amount_cents / 100:.2f}")
    failed_but_paid = rows[(rows["status"] == "failed") & held]
    assert failed_but_paid.empty, f"rows reported failed that the server paid: {failed_but_paid['source_row'].tolist()}"
    return held


def assert_clean(code: int, output: str, elapsed: float, allowed: set[int]) -> None:
    assert elapsed < BOUND_S, f"payout took {elapsed:.1f} s"
    assert "Traceback" not in output, output
    assert code in allowed, f"exit {code}:\n{output[-3000:]}"


def assert_audit_names_unknown(run: Runner, target: list[str], rows: pd.DataFrame, held: pd.Series) -> None:
    """`payout audit` finds every bonus the ledger calls paid, and names each unknown row whose bonus the server
    holds as the probable owner of an unexpected bonus, and counts every unknown row (exit 1 while one remains)."""
    code, output, _, audit_dir = run("audit", *target)
    assert "Traceback" not in output, output
    assert audit_dir is not None and (audit_dir / "audit.parquet").exists(), output
    audit = pd.read_parquet(audit_dir / "audit.parquet")
    kinds = audit["kind"].value_counts().to_dict()
    owners = rows[(rows["status"] == "unknown") & held]
    assert kinds.get("matched", 0) == int(rows["status"].isin(["paid", "already_paid"]).sum()), audit
    assert kinds.get("missing", 0) == kinds.get("mismatched", 0) == 0, audit
    assert kinds.get("unexpected", 0) == len(owners), audit
    details = " | ".join(audit.loc[audit["kind"] == "unexpected", "detail"].astype(str))
    for r in owners.itertuples(index=False):
        assert f"probably the bonus of row {r.source_file}:{r.source_row}," in details, details
    unknown = int((rows["status"] == "unknown").sum())
    assert kinds.get("unknown", 0) == unknown, audit  # never an all-clear while an outcome is unknown
    assert code == (1 if len(owners) or unknown else 0), output


def counts_since(proxy: HostileProxy, before: Counter[str]) -> dict[str, int]:
    return {k: v for k, v in (proxy.counts - before).items() if v}


# -- the tests --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=[c.id or c.mode for c in CASES])
def test_a_broken_answer_ends_cleanly_and_an_honest_rerun_pays_every_row_exactly_once(
        case: Case, hostile: HostileProxy, run: Runner, tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "hostile.csv", [row(i, amount=a) for i, a in enumerate(AMOUNTS)])
    config = fast_config(tmp_path / "fast.toml", case.deadline_s)
    target = ["--api-url", hostile.url, "--config", str(config)]
    command = ["run", str(sheet), *target, "--batch-id", f"hostile-{case.id or case.mode}",
               "--chunk-size", str(CHUNK)]
    sandbox_url = hostile.sandbox.url
    if case.bound:  # the ledger reads the (still empty) target first, honestly: the lie meets the sending path
        since = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")
        code, output, _, _ = run("recover", *target, "--since", since)
        assert code == 0, output
    if case.faults:
        set_faults(sandbox_url, case.faults)

    # 1. the hostile run
    hostile.set(case.mode, **dict(case.opts))
    before = hostile.counts.copy()
    code, output, elapsed, report_dir = run(*command)
    first_requests, first_code, first_elapsed = counts_since(hostile, before), code, elapsed
    hostile.honest()
    assert_clean(code, output, elapsed, set(case.codes))
    assert report_dir is not None, output
    assert hostile.altered, "the proxy never lied: the test did not test anything"
    settle_sandbox(sandbox_url)
    rows = read_rows(report_dir)
    assert len(rows) == len(AMOUNTS)
    first = rows["status"].value_counts().to_dict()
    assert set(first) <= case.statuses, f"statuses after the hostile run: {first}"
    held = assert_truthful(rows, sandbox_url)
    paid_first = paid_multiset(server_bonuses(sandbox_url))
    assert all(n <= 1 for n in paid_first.values()), f"paid twice during the hostile run: {paid_first}"
    if case.server_paid == ALL:
        assert held.all() and paid_first == expected_multiset()
    elif case.server_paid == NONE:
        assert not held.any() and not paid_first
    if case.faults:
        set_faults(sandbox_url, "")
    if not rows["status"].isin(["pending"]).any():  # honest `payout audit` names the bonus of each unknown row
        assert_audit_names_unknown(run, target, rows, held)

    # 2. honest re-runs of the same command, while rows remain pending or refused
    reruns = []
    for _ in range(RERUNS):
        before = hostile.counts.copy()
        code, output, elapsed, report_dir = run(*command)
        assert_clean(code, output, elapsed, {0, 1})
        assert report_dir is not None, output
        rows = read_rows(report_dir)
        reruns.append((code, rows["status"].value_counts().to_dict(), counts_since(hostile, before), elapsed))
        if not rows["status"].isin(["pending", "failed"]).any():
            break
    if case.server_paid == ALL:  # rows the server paid (however it answered) are never sent again
        assert not any(requests.get("POST /user-bonuses") for _, _, requests, _ in reruns), reruns

    # 3. every row paid exactly once on the server's own listing; never paid again by a re-run
    assert paid_multiset(server_bonuses(sandbox_url)) == expected_multiset()
    held = assert_truthful(rows, sandbox_url)
    assert held.all()
    final = rows["status"].value_counts().to_dict()
    assert set(final) <= {"paid", "unknown", "already_paid"}, f"statuses after the honest re-runs: {final}"
    unknown = rows[rows["status"] == "unknown"]
    if case.server_paid == NONE:  # the server never paid during the lie: every row must have been paid since
        assert unknown.empty

    # 4. `payout audit` (honest) names the bonus of every row still unknown
    assert_audit_names_unknown(run, target, rows, held)
    print(f"\n[{case.id or case.mode}] hostile run: exit {first_code}, {first}, {first_elapsed:.2f} s, "
          f"requests {first_requests}\n  honest re-runs: {[(c, s, r, round(t, 2)) for c, s, r, t in reruns]}")


def test_a_recovery_a_broken_answer_stopped_is_done_again_by_the_next_run(
        hostile: HostileProxy, run: Runner, tmp_path: Path) -> None:
    """A lost ledger: the first run on a fresh one must read the target's operations before paying. When a broken
    answer stops that reading ("nothing was sent"), the next run must read them again before it pays — or it pays
    every row the lost ledger had paid a second time (a different chunk size gives different operation ids, so
    the server's OPERATION_ALREADY_EXISTS cannot catch it)."""
    sheet = write_csv(tmp_path / "hostile.csv", [row(i, amount=a) for i, a in enumerate(AMOUNTS)])
    config = fast_config(tmp_path / "fast.toml", 2.0)
    command = ["run", str(sheet), "--api-url", hostile.url, "--config", str(config), "--batch-id", "hostile-lost"]
    lost, fresh = tmp_path / "lost-ledger.sqlite", tmp_path / "fresh-ledger.sqlite"

    code, output, _, _ = run(*command, "--chunk-size", "3", ledger=lost)
    assert code == 0, output
    assert paid_multiset(server_bonuses(hostile.sandbox.url)) == expected_multiset()

    hostile.set("not_json")  # the fresh ledger's first run cannot read the target's operations: nothing is sent
    code, output, elapsed, report_dir = run(*command, ledger=fresh)
    hostile.honest()
    assert_clean(code, output, elapsed, {3})
    assert report_dir is not None and set(read_rows(report_dir)["status"]) == {"pending"}
    assert paid_multiset(server_bonuses(hostile.sandbox.url)) == expected_multiset()

    before = hostile.counts.copy()
    code, output, elapsed, report_dir = run(*command, ledger=fresh)
    assert_clean(code, output, elapsed, {0, 1})
    print(f"\n[lost ledger] honest re-run: exit {code}, requests {counts_since(hostile, before)}")
    assert paid_multiset(server_bonuses(hostile.sandbox.url)) == expected_multiset()  # not paid a second time
    assert hostile.counts["GET /operations"] > before["GET /operations"], "the re-run did not read the operations"
    assert report_dir is not None and set(read_rows(report_dir)["status"]) == {"already_paid"}
