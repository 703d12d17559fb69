"""The sandbox is killed (SIGKILL) and restarted on the same db and port while operations are in flight:
the run rides it out or stops, and re-running converges to every valid row paid exactly once."""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path

import pytest
from chaos_helpers import (
    Payout,
    base_seed,
    bonuses_since,
    check_exactly_once,
    last_bonus_id,
    make_sheet,
    record,
    timeout_for,
    trials,
    write_config,
)
from sandbox_fixtures import SandboxProcess, stats

SANDBOX_ARGS = ("--faults", "latency_ms=5,slow_op_ms=300")


@pytest.mark.timeout(timeout_for(max(2, trials() // 4)))
def test_server_killed_and_restarted_mid_run_converges_to_exactly_once(tmp_path: Path) -> None:
    n_trials, seed0 = max(2, trials() // 4), base_seed()
    config = write_config(tmp_path / "chaos.toml")
    figures: Counter[str] = Counter()
    exit_codes: Counter[str] = Counter()
    with SandboxProcess(tmp_path / "sandbox.sqlite", *SANDBOX_ARGS, "--seed", str(seed0)) as server:
        for trial in range(n_trials):
            seed = seed0 * 100_003 + 9_000 + trial
            rng = random.Random(seed)
            work = tmp_path / f"t{trial:04d}"
            work.mkdir()
            sheet = make_sheet(work / f"restart_{trial}.csv", 1200, user_base=(seed0 * 1000 + trial) * 10_000 + 8_000,
                               seed=seed)
            payout = Payout(sheet.path, server.url, work / "ledger.sqlite", work / "reports", config,
                            chunk_size=150, concurrency=3)
            before = last_bonus_id(server.url)
            first = payout.start(work / "payout.log")
            restarts = 0
            for _ in range(rng.randint(1, 3)):
                # wait until operations are being posted (in flight), then kill the server at a random moment
                target = int(stats(server.url)["requests"].get("POST /api/v1/user-bonuses", 0)) + rng.randint(1, 3)
                deadline = time.monotonic() + 120
                while (first.poll() is None and time.monotonic() < deadline
                       and int(stats(server.url)["requests"].get("POST /api/v1/user-bonuses", 0)) < target):
                    time.sleep(0.005)
                if first.poll() is not None:
                    break
                time.sleep(rng.uniform(0.0, 0.4))
                server.restart()  # SIGKILL, then the same --db on the same port
                restarts += 1
            exit_codes[str(first.wait(timeout=300))] += 1
            codes = payout.run_until_done(work / "payout.log", sheet.final_code)
            exit_codes.update(str(c) for c in codes)
            verdict = check_exactly_once(sheet, bonuses_since(server.url, before), payout.ledger, payout.out)
            figures["trials"] += 1
            figures["server_restarts"] += restarts
            figures["reruns"] += len(codes)
            verdict.add_to(figures)
    assert figures["server_restarts"] > 0
    record("server_restarts", {**figures, "seed": seed0, "exit_codes_first_and_reruns": dict(exit_codes),
                               "sandbox": " ".join(SANDBOX_ARGS)})
