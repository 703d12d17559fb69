"""Many workers, one batch, one PostgreSQL ledger: 4 `payout run` processes share a 20k-row batch while random
workers are killed with SIGKILL at random moments (and restarted at once), the sandbox injecting faults. Every
valid row is paid exactly once by the server's own listing, none is lost.

N trials (`PAYOUT_CHAOS_TRIALS // 2`, at least 10; the long run sets PAYOUT_CHAOS_TRIALS), each with its own
sheet, users and database on the session's throwaway PostgreSQL server (tests/pg_server.py), against one real
sandbox process. A killed worker may die while planning (its committed chunks stay planned, the next planner
plans the rest), holding claims (they expire after `claim_lease_s` and another worker resumes the operation,
asking the server by operation id first) or in the middle of recording an outcome. When the last workers have
exited, the newest report must account for every row (paid once, with the server's bonus ids); only if a worker
stopped early on a fault does one more run of the sheet go (re-run until done, bounded).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path

import pytest
from chaos_helpers import (
    RUN_TIMEOUT_S,
    Payout,
    base_seed,
    bonuses_since,
    check_exactly_once,
    fault_counts,
    kill9,
    last_bonus_id,
    make_sheet,
    post_count,
    record,
    settled,
    timeout_for,
    trials,
)
from sandbox_fixtures import SandboxProcess, set_faults, stats

N_VALID, N_INVALID, N_DUPLICATES = 19_900, 50, 50  # 20,000 sheet rows
WORKERS, CHUNK_SIZE, CONCURRENCY = 4, 500, 2  # 40 operations, up to 8 in flight
LEASE_S = 2.0  # a dead worker's operations wait this long for another worker (production default 30 s)
FAULTS = "http_500=0.03,http_503=0.02,http_429=0.02,reset_after_commit=0.05,op_fail=0.01,latency_ms=3,slow_op_ms=150"


def n_trials() -> int:
    return max(10, trials() // 2)


def write_worker_config(path: Path) -> Path:
    path.write_text("backoff_base_s = 0.05\nbackoff_max_s = 1.0\npoll_initial_s = 0.05\npoll_max_s = 0.3\n"
                    f"request_timeout_s = 10.0\nclaim_lease_s = {LEASE_S}\n")
    return path


@pytest.mark.timeout(timeout_for(n_trials(), per_trial_s=60))
def test_four_workers_killed_at_random_pay_a_20k_batch_exactly_once(tmp_path: Path, pg_server) -> None:
    seed0 = base_seed()
    config = write_worker_config(tmp_path / "workers.toml")
    figures: Counter[str] = Counter()
    exit_codes: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    for trial in range(n_trials()):
        # a sandbox of its own per trial: a fresh ledger first reads every operation its target holds (recovery),
        # and the earlier trials' would make each trial slower than the last
        with SandboxProcess(tmp_path / f"sandbox{trial}.sqlite", "--rate-limit", "5000",
                            "--daily-quota", "1000000") as server:
            seed = seed0 * 100_003 + 50_000 + trial
            rng = random.Random(seed)
            work = tmp_path / f"t{trial:04d}"
            work.mkdir()
            sheet = make_sheet(work / f"workers_{trial}.csv", N_VALID, user_base=(seed0 * 1000 + trial) * 100_000,
                               seed=seed, n_invalid=N_INVALID, n_duplicates=N_DUPLICATES)
            payout = Payout(sheet.path, server.url, pg_server.new_database(),  # type: ignore[arg-type]
                            work / "reports", config, chunk_size=CHUNK_SIZE, concurrency=CONCURRENCY)
            before, posts_before = last_bonus_id(server.url), post_count(server.url)
            set_faults(server.url, FAULTS, seed)
            faults_before = fault_counts(server.url)

            procs = [payout.start(work / f"worker{i}.log") for i in range(WORKERS)]
            started = time.monotonic()
            # 2-4 kills at seeded moments of the first 7 s (workers start, plan, claim, pay), each of a random
            # worker, which is restarted at once: a scheduler restarting a dead container
            for at in sorted(rng.uniform(0.5, 7.0) for _ in range(rng.randint(2, 4))):
                time.sleep(max(0.0, at - (time.monotonic() - started)))
                victim = rng.randrange(WORKERS)
                if kill9(procs[victim]):
                    figures["kills"] += 1
                    figures["restarts"] += 1
                    procs[victim] = payout.start(work / f"worker{victim}.log")
                else:
                    figures["kill_after_exit"] += 1
            last_codes = [proc.wait(timeout=RUN_TIMEOUT_S) for proc in procs]
            exit_codes.update(str(c) for c in last_codes)
            figures["posts_by_workers"] += post_count(server.url) - posts_before

            set_faults(server.url, "")
            injected = {k: v - faults_before.get(k, 0) for k, v in fault_counts(server.url).items()}
            figures.update({f"fault_{k}": v for k, v in injected.items()})
            # the last workers' reports must already account for every row; a run of its own only after a worker
            # stopped early (a fault past its retries), and then it re-runs until done (bounded)
            if not (all(c == sheet.final_code for c in last_codes) and settled(payout.out)):
                figures["final_runs"] += len(payout.run_until_done(work / "final.log", sheet.final_code))
            verdict = check_exactly_once(sheet, bonuses_since(server.url, before), payout.ledger, payout.out)
            verdict.add_to(figures)
            figures["trials"] += 1
            figures["rows"] += sheet.n_rows
            figures["valid_rows_paid"] += len(sheet.expected)
            statuses.update(stats(server.url)["statuses"])
    record("workers_kill_9_faults", {**figures, "seed": seed0, "workers": WORKERS, "lease_s": LEASE_S,
                                     "exit_codes": dict(exit_codes), "fault_spec": FAULTS,
                                     "server_statuses": dict(statuses)})
    assert figures["double_payments"] == 0 and figures["lost_rows"] == 0
