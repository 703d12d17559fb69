"""Daily quota exhausted (`payout sandbox --daily-quota N`): the run stops cleanly with exit 3, reports the
rest `pending`, says when to re-run; after a restart with a bigger quota (the day's count survives it; the
bigger quota is the new day) the next run finishes, and nothing is paid twice."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from chaos_helpers import (
    Payout,
    bonuses_since,
    check_exactly_once,
    last_report,
    ledger_statuses,
    make_sheet,
    record,
    write_config,
)
from sandbox_fixtures import SandboxProcess, stats

QUOTA = 3  # POSTs allowed per day; the sheet needs 6


def test_daily_quota_spent_stops_cleanly_with_pending_rows_then_next_run_finishes(tmp_path: Path) -> None:
    config = write_config(tmp_path / "chaos.toml")
    sheet = make_sheet(tmp_path / "quota.csv", 1200, user_base=4_000_000, seed=21, n_invalid=5)
    args = ("--daily-quota", str(QUOTA), "--faults", "slow_op_ms=100")
    with SandboxProcess(tmp_path / "sandbox.sqlite", *args) as server:
        payout = Payout(sheet.path, server.url, tmp_path / "ledger.sqlite", tmp_path / "reports", config,
                        chunk_size=200, concurrency=2)
        log = tmp_path / "first.log"
        assert payout.run(log) == 3
        text = log.read_text()
        assert "quota" in text.lower()
        assert "pending — run `payout run` again after " in text  # says when (UTC midnight)
        summary = json.loads((last_report(payout.out) / "summary.json").read_text())
        assert summary.get("rerun_after")
        rows = pd.read_parquet(last_report(payout.out) / "rows.parquet")
        counts = rows["status"].value_counts().to_dict()
        assert counts.get("pending", 0) > 0 and counts.get("paid", 0) > 0
        assert counts["pending"] + counts["paid"] == len(sheet.expected) and len(rows) == sheet.n_rows
        paid_on_server = len(bonuses_since(server.url, 0))
        assert paid_on_server == counts["paid"] == ledger_statuses(payout.ledger)["paid"]
        refused = int(stats(server.url)["statuses"].get("429", 0))
        assert refused >= 1

        # a new day: the day's count survives a restart, so a bigger quota stands in for the new day
        server.args = [a if a != str(QUOTA) else "1000" for a in server.args]
        server.restart()
        codes = payout.run_until_done(tmp_path / "next.log", sheet.final_code, max_reruns=1)
        verdict = check_exactly_once(sheet, bonuses_since(server.url, 0), payout.ledger, payout.out)
    record("daily_quota", {"first_exit": 3, "pending_after_quota": counts["pending"], "paid_before_quota":
                           counts["paid"], "quota_429": refused, "next_run_exits": codes,
                           "double_payments": verdict.double_payments,
                           "lost_rows": verdict.lost_rows + verdict.extra_payments})
