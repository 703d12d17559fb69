"""A run killed with SIGKILL after the server committed but before the answer arrived pays nothing twice."""

from __future__ import annotations

import signal
from pathlib import Path

from payout_helpers import (
    fault_counts,
    ledger_statuses,
    operations_settled,
    paid_on_server,
    payout_process,
    server_bonuses,
)
from sandbox_fixtures import SandboxProcess, set_faults
from sheet_factory import row, uid, write_csv
from waiting import wait_for


def test_kill_9_between_intent_and_response_then_rerun_pays_each_row_once(tmp_path: Path) -> None:
    rows = [row(i, amount="3.00") for i in range(40)]
    sheet = write_csv(tmp_path / "payouts.csv", rows)
    ledger = tmp_path / "ledger.sqlite"
    common = ["--ledger", str(ledger), "--out", str(tmp_path / "reports"), "--chunk-size", "10",
              "--batch-id", "payouts"]
    # Every POST is committed by the server and then its connection is dropped; every answer is slow,
    # so the client is still waiting to learn what happened when we kill it.
    with SandboxProcess(tmp_path / "sandbox.sqlite", "--faults", "reset_after_commit=1.0,latency_ms=400") as server:
        proc = payout_process("run", str(sheet), "--api-url", server.url, *common)
        wait_for(lambda: fault_counts(server.url).get("reset_after_commit", 0) >= 1 or proc.poll() is not None,
                 "the server to commit a POST and drop its answer")
        assert proc.poll() is None, "the run ended before the server dropped an answer"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        wait_for(lambda: operations_settled(server.url), "the committed operation to finish on the server")
        committed_on_server = len(server_bonuses(server.url))
        assert committed_on_server >= 10  # the server paid the first chunk; the client never heard back
        statuses = ledger_statuses(ledger)
        assert statuses.get("paid", 0) == 0 and statuses.get("planned", 0) >= 10  # intent, no answer

        set_faults(server.url, "")
        rerun = payout_process("run", str(sheet), "--api-url", server.url, *common)
        assert rerun.wait(timeout=120) == 0
        assert paid_on_server(server.url) == {(uid(i), "3.00"): 1 for i in range(40)}
        assert ledger_statuses(ledger) == {"paid": 40}
