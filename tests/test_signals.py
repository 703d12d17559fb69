"""Two Ctrl-C in a row: the ledger lock is released only after every sender thread has stopped.

Before issue 8 the second KeyboardInterrupt unwound the main thread through the ledger's `with` block, so the
lock was released while pool threads still POSTed. A real `payout run` subprocess gets SIGINT twice; the test
takes the ledger lock as soon as it is free and checks the server receives no POST from then on.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
from pathlib import Path

from payout_helpers import paid_on_server, post_count
from sandbox_fixtures import REPO, TOKEN, SandboxProcess, set_faults
from sheet_factory import row, uid, write_csv
from waiting import wait_for


def lock_is_free(ledger: Path) -> bool:
    fd = os.open(f"{ledger}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing drops the lock again
    return True


def test_second_sigint_stops_polling_and_the_lock_outlives_every_sender(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "p.csv", [row(i, amount=f"{i % 50 + 1}.00") for i in range(60)])
    ledger, out = tmp_path / "ledger.sqlite", tmp_path / "reports"
    config = tmp_path / "c.toml"
    config.write_text("signal_grace_s = 30\n")
    with SandboxProcess(tmp_path / "s.sqlite", "--faults", "slow_op_ms=3000,latency_ms=50") as server:
        cmd = [sys.executable, "-m", "pipeline", "--log-json", "run", str(sheet), "--api-url", server.url,
               "--batch-id", "b", "--ledger", str(ledger), "--out", str(out), "--config", str(config),
               "--chunk-size", "10", "--concurrency", "4"]
        env = {**os.environ, "TOLOKA_TOKEN": TOKEN, "PYTHONPATH": str(REPO)}
        with open(tmp_path / "run.log", "wb") as log:
            proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: post_count(server.url) >= 2, "the run to POST")
            proc.send_signal(signal.SIGINT)
            proc.send_signal(signal.SIGINT)  # the impatient second Ctrl-C: stop polling at once
            wait_for(lambda: lock_is_free(ledger) or proc.poll() is not None, "the ledger lock to be released")
            sent = post_count(server.url)
            assert proc.wait(timeout=60) == 130
        finally:
            if proc.poll() is None:
                proc.kill()
        assert post_count(server.url) == sent  # nothing was sent once the lock was free
        text = (tmp_path / "run.log").read_text()
        assert "Traceback" not in text
        [summary] = list(out.glob("*/summary.json"))  # the partial report
        assert '"pending"' in summary.read_text()

        # the next run resumes what was left open and pays every row exactly once
        set_faults(server.url, "")
        for _ in range(5):
            code = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, timeout=120).returncode
            if code == 0:
                break
        assert code == 0
        assert paid_on_server(server.url) == {(uid(i), f"{i % 50 + 1}.00"): 1 for i in range(60)}
