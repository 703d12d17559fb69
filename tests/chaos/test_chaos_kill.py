"""kill -9 at random points: whatever moment a `payout run` dies at, re-running pays every valid row exactly once.

N trials (`PAYOUT_CHAOS_TRIALS`, default 20; the long run uses 200), each on its own sheet, ledger and users,
against one real sandbox process with some latency and slow operations so that kills land at every stage:
before intent, between intent and POST, after the server committed but before the answer, while polling,
while recording results, while writing the report. Half the kills fire on a seeded timer, half right after
the k-th POST reached the server; some trials also kill the first re-run.
"""

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
    fault_counts,
    kill9,
    last_bonus_id,
    ledger_statuses,
    make_sheet,
    post_count,
    record,
    timeout_for,
    trials,
    write_config,
)
from sandbox_fixtures import SandboxProcess, stats

N_VALID, N_INVALID, N_DUPLICATES = 1500, 25, 25
CHUNK_SIZE, CONCURRENCY = 200, 2  # 8 operations, 4 waves: a long enough window to land kills in
SANDBOX_FAULTS = "latency_ms=10,slow_op_ms=250"


def stage_of_kill(ledger: Path, server_paid: int) -> str:
    """Where the kill landed, read from the ledger and the server after the fact."""
    st = ledger_statuses(ledger)
    if not st:
        return "before_intent"
    if st.get("paid", 0) == N_VALID:
        return "after_results_recorded"  # writing the report or finishing the run
    if server_paid > st.get("paid", 0):
        return "server_paid_ledger_not_yet"  # after POST/commit, before the answer or the results were recorded
    if st.get("submitted", 0):
        return "while_polling"
    return "intent_before_post"


@pytest.mark.timeout(timeout_for(trials()))
def test_kill_9_at_random_points_then_rerun_pays_each_valid_row_exactly_once(tmp_path: Path) -> None:
    n_trials, seed0 = trials(), base_seed()
    config = write_config(tmp_path / "chaos.toml")
    figures: Counter[str] = Counter()
    stages: Counter[str] = Counter()
    exit_codes: Counter[str] = Counter()
    with SandboxProcess(tmp_path / "sandbox.sqlite", "--faults", SANDBOX_FAULTS, "--seed", str(seed0)) as server:
        for trial in range(n_trials):
            seed = seed0 * 100_003 + trial
            rng = random.Random(seed)
            work = tmp_path / f"t{trial:04d}"
            work.mkdir()
            sheet = make_sheet(work / f"payouts_{trial}.csv", N_VALID, user_base=(seed0 * 1000 + trial) * 10_000,
                               seed=seed, n_invalid=N_INVALID, n_duplicates=N_DUPLICATES)
            payout = Payout(sheet.path, server.url, work / "ledger.sqlite", work / "reports", config,
                            chunk_size=CHUNK_SIZE, concurrency=CONCURRENCY)
            before = last_bonus_id(server.url)
            log = work / "payout.log"

            kills = 0
            for round_no in range(2):  # the first run is always killed; the first re-run with p=0.3
                if round_no == 1 and rng.random() >= 0.3:
                    break
                posts_before = post_count(server.url)
                proc = payout.start(log)
                if rng.random() < 0.5:
                    time.sleep(rng.uniform(0.2, 2.6))
                else:  # right after the k-th POST reached the server, plus a little
                    k, extra = rng.randint(1, 8), rng.uniform(0.0, 0.3)
                    while proc.poll() is None and post_count(server.url) - posts_before < k:
                        time.sleep(0.005)
                    time.sleep(extra)
                if kill9(proc):
                    kills += 1
                    stages[stage_of_kill(payout.ledger, len(bonuses_since(server.url, before)))] += 1
                else:
                    exit_codes[str(proc.returncode)] += 1
                    stages["run_already_finished"] += 1

            codes = payout.run_until_done(log, sheet.final_code)
            exit_codes.update(str(c) for c in codes)
            verdict = check_exactly_once(sheet, bonuses_since(server.url, before), payout.ledger, payout.out)
            figures["trials"] += 1
            figures["kills"] += kills
            figures["reruns"] += len(codes)
            verdict.add_to(figures)
            figures["rows"] += sheet.n_rows
        faults = fault_counts(server.url)
        server_stats = stats(server.url)
    record("kill_9_random_points", {
        **figures, "seed": seed0, "rows_per_sheet": sheet.n_rows, "kill_stages": dict(stages),
        "exit_codes": dict(exit_codes), "faults_injected": faults, "server_statuses": server_stats["statuses"],
        "sandbox_faults": SANDBOX_FAULTS,
    })
