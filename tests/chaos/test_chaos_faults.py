"""30 % of requests faulted (500/503, 429 bursts with Retry-After, reset after commit, latency, slow and FAILed
operations): re-running converges, within a bounded number of runs, to every valid row paid exactly once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from chaos_helpers import (
    Payout,
    add_counts,
    base_seed,
    bonuses_since,
    check_exactly_once,
    fault_counts,
    last_bonus_id,
    make_sheet,
    record,
    timeout_for,
    trials,
    write_config,
)
from sandbox_fixtures import SandboxProcess, set_faults, stats

# Per request: 8 % 500 + 7 % 503 + 5 % 429 (each opening a burst of 3) + 7 % reset after the commit
# ≈ 30 % of requests answered with a fault; 30 % of operations end FAIL half-way; every answer is late.
EXTRA_TRIALS = 12  # reset_after_commit is rolled on POSTs only (~6 a trial): 4 extra missed it ~1 run in 40
FAULT_KINDS = ("op_fail", "reset_after_commit", "http_429")
FAULTS = ("http_500=0.08,http_503=0.07,http_429=0.05,burst_429=3,reset_after_commit=0.07,"
          "op_fail=0.3,latency_ms=5,slow_op_ms=100")
N_VALID = 1000


@pytest.mark.timeout(timeout_for(max(2, trials() // 5)))
def test_faulty_server_converges_to_each_valid_row_paid_exactly_once(tmp_path: Path) -> None:
    n_trials, seed0 = max(2, trials() // 5), base_seed()
    config = write_config(tmp_path / "chaos.toml")
    figures: Counter[str] = Counter()
    exit_codes: Counter[str] = Counter()
    faults: Counter[str] = Counter()
    with SandboxProcess(tmp_path / "sandbox.sqlite") as server:
        # Every fault kind must fire at least once; which request draws which fault depends on the threads'
        # order, so up to EXTRA_TRIALS more trials run while one kind has not fired yet.
        for trial in range(n_trials + EXTRA_TRIALS):
            if trial >= n_trials and all(faults[kind] > 0 for kind in FAULT_KINDS):
                break
            seed = seed0 * 100_003 + 7_000 + trial
            work = tmp_path / f"t{trial:04d}"
            work.mkdir()
            sheet = make_sheet(work / f"faulty_{trial}.csv", N_VALID, user_base=(seed0 * 1000 + trial) * 10_000 + 5_000,
                               seed=seed, n_invalid=10, n_duplicates=10)
            before = last_bonus_id(server.url)
            requests_before = sum(stats(server.url)["requests"].values())
            faults_before = fault_counts(server.url)  # the server's counters are cumulative
            set_faults(server.url, FAULTS, seed)
            payout = Payout(sheet.path, server.url, work / "ledger.sqlite", work / "reports", config,
                            chunk_size=200, concurrency=4)
            codes = payout.run_until_done(work / "payout.log", sheet.final_code)
            injected = {k: v - faults_before.get(k, 0) for k, v in fault_counts(server.url).items()}
            set_faults(server.url, "")
            requests_total = sum(stats(server.url)["requests"].values()) - requests_before
            verdict = check_exactly_once(sheet, bonuses_since(server.url, before), payout.ledger, payout.out)
            add_counts(faults, injected)
            exit_codes.update(str(c) for c in codes)
            figures["trials"] += 1
            figures["runs"] += len(codes)
            figures["requests"] += requests_total
            verdict.add_to(figures)
        assert all(faults[kind] > 0 for kind in FAULT_KINDS), faults
    record("faults_30_percent", {**figures, "seed": seed0, "exit_codes": dict(exit_codes),
                                 "faults_injected": dict(faults), "fault_spec": FAULTS})
