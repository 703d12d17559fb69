"""A run killed with SIGKILL after the server committed but before the answer arrived pays nothing twice."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from payout_helpers import paid_multiset, server_bonuses
from sandbox_fixtures import TOKEN, SandboxProcess, set_faults, stats
from sheet_factory import row, uid, write_csv

REPO = Path(__file__).resolve().parents[1]


def payout_process(*args: str) -> subprocess.Popen:
    env = {**os.environ, "TOLOKA_TOKEN": TOKEN}
    return subprocess.Popen([sys.executable, "-m", "pipeline", "--log-json", *args], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def ledger_statuses(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT status, count(*) FROM rows GROUP BY status").fetchall())


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
        deadline = time.monotonic() + 60
        while stats(server.url)["faults"].get("reset_after_commit", 0) < 1:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        time.sleep(0.5)  # let the committed operation finish on the server
        committed_on_server = len(server_bonuses(server.url))
        assert committed_on_server >= 10  # the server paid the first chunk; the client never heard back
        statuses = ledger_statuses(ledger)
        assert statuses.get("paid", 0) == 0 and statuses.get("planned", 0) >= 10  # intent, no answer

        set_faults(server.url, "")
        rerun = payout_process("run", str(sheet), "--api-url", server.url, *common)
        assert rerun.wait(timeout=120) == 0
        paid = paid_multiset(server_bonuses(server.url))
        assert paid == {(uid(i), "3.00"): 1 for i in range(40)}
        assert ledger_statuses(ledger) == {"paid": 40}
