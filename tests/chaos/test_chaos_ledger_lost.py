"""kill -9, then the ledger is lost: the next run recovers from the server's own operations and pays nothing twice.

Each trial pays a finance-shaped sheet (invalid and duplicate rows) against a real sandbox process with faults
(500s, resets after commit, slow operations so that kills land mid-flight), kills the run with SIGKILL at a
seeded moment, deletes the ledger (file, -wal, -shm, .lock), and re-runs under the same batch id with another
`--chunk-size`, another `--concurrency` and the rows shuffled into a new file. Every operation id the re-run
computes therefore differs from the killed run's: only recovery (the server's USER_BONUS.BATCH_CREATE
operations and their logs, `__item_idx` = row key) stands between a lost ledger and a double payment.

`test_recovery_interrupted_...` pins what happens when that recovery itself does not complete (killed, or the
server refuses the listing): the next run must still recover before it plans anything.
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
    delete_ledger,
    fault_counts,
    has_traceback,
    kill9,
    lanes,
    last_bonus_id,
    ledger_statuses,
    make_sheet,
    merge_tallies,
    post_count,
    record,
    request_count,
    run_in_lanes,
    shuffled_sheet,
    timeout_for,
    trials,
    wait_for,
    write_config,
)
from payout_helpers import paid_multiset
from sandbox_fixtures import SandboxProcess, set_faults, stats

N_VALID, N_INVALID, N_DUPLICATES = 160, 6, 6
FIRST_CHUNKS, RERUN_CHUNKS = (20, 30, 40), (25, 35, 50, 60)  # disjoint: every re-run chunking differs
FIRST_CONCURRENCY, RERUN_CONCURRENCY = (2, 3), (1, 4)
SANDBOX_FAULTS = "http_500=0.03,reset_after_commit=0.05,latency_ms=5,slow_op_ms=150"
LISTING = "GET /api/v1/operations"
TRIALS_PER_SERVER = 4  # a fresh server now and then: recovery reads every operation the target holds


def stage_of_kill(ledger: Path, server_paid: int) -> str:
    st = ledger_statuses(ledger)
    if not st:
        return "before_intent"
    if server_paid > st.get("paid", 0):
        return "server_paid_ledger_not_yet"
    if st.get("submitted", 0):
        return "while_polling"
    if st.get("paid", 0) == N_VALID:
        return "after_results_recorded"
    return "intent_before_post"


@pytest.mark.timeout(timeout_for(trials(), per_trial_s=20.0))
def test_kill_9_then_ledger_lost_rerun_with_other_chunks_order_and_concurrency_pays_each_row_once(
        tmp_path: Path) -> None:
    n_trials, seed0 = trials(), base_seed()
    config = write_config(tmp_path / "chaos.toml")

    def group(group_no: int, trial_nos: range) -> dict[str, Counter[str]]:
        tally: dict[str, Counter[str]] = {k: Counter() for k in ("figures", "stages", "exit_codes", "faults",
                                                                 "statuses")}
        with SandboxProcess(tmp_path / f"sandbox-{group_no:04d}.sqlite", "--faults", SANDBOX_FAULTS, "--seed",
                            str(seed0 * 100_003 + 31_000 + group_no)) as server:
            for trial in trial_nos:
                _trial(server, tmp_path, trial, seed0, config, tally)
            tally["faults"].update(fault_counts(server.url))
            tally["statuses"].update(stats(server.url)["statuses"])
            tally["figures"]["listing_requests"] += stats(server.url)["requests"].get(LISTING, 0)
        return tally

    t = merge_tallies(run_in_lanes(n_trials, TRIALS_PER_SERVER, group))
    record("ledger_lost_after_kill_9", {
        **t["figures"], "seed": seed0, "rows_per_sheet": N_VALID + N_INVALID + N_DUPLICATES,
        "kill_stages": dict(t["stages"]), "exit_codes": dict(t["exit_codes"]), "faults_injected": dict(t["faults"]),
        "server_statuses": dict(t["statuses"]), "sandbox_faults": SANDBOX_FAULTS,
        "trials_per_server": TRIALS_PER_SERVER, "lanes": lanes(),
    })


def _trial(server: SandboxProcess, tmp_path: Path, trial: int, seed0: int, config: Path,
           tally: dict[str, Counter[str]]) -> None:
    figures, stages, exit_codes = tally["figures"], tally["stages"], tally["exit_codes"]
    seed = seed0 * 100_003 + 31_000 + trial
    rng = random.Random(seed)
    work = tmp_path / f"t{trial:04d}"
    work.mkdir()
    batch = f"lost_{trial}"
    sheet = make_sheet(work / f"{batch}.csv", N_VALID, user_base=(seed0 * 1000 + trial) * 10_000 + 3_000_000,
                       seed=seed, n_invalid=N_INVALID, n_duplicates=N_DUPLICATES)
    ledger, out = work / "ledger.sqlite", work / "reports"
    first = Payout(sheet.path, server.url, ledger, out, config, chunk_size=rng.choice(FIRST_CHUNKS),
                   concurrency=rng.choice(FIRST_CONCURRENCY), extra=["--batch-id", batch])
    before = last_bonus_id(server.url)
    log = work / "payout.log"

    posts_before, listings_before = post_count(server.url), request_count(server.url, LISTING)
    proc = first.start(log)
    if rng.random() < 0.5:  # a seeded moment after start-up (the fresh ledger's recovery listing): any stage
        while proc.poll() is None and request_count(server.url, LISTING) == listings_before:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.5))
    else:  # just after the k-th POST reached the server, plus a little
        k, extra = rng.randint(1, 6), rng.uniform(0.0, 0.25)
        while proc.poll() is None and post_count(server.url) - posts_before < k:
            time.sleep(0.02)
        time.sleep(extra)
    if kill9(proc):
        figures["kills"] += 1
        stages[stage_of_kill(ledger, len(bonuses_since(server.url, before)))] += 1
    else:
        exit_codes[f"first:{proc.returncode}"] += 1
        stages["run_already_finished"] += 1
    paid_before_loss = sum(paid_multiset(bonuses_since(server.url, before)).values())
    figures["paid_before_ledger_lost"] += paid_before_loss
    figures["ledgers_deleted"] += bool(delete_ledger(ledger))

    (work / "moved").mkdir()
    moved = shuffled_sheet(sheet, work / "moved" / f"{batch}-reordered.csv", seed + 1)
    rerun = Payout(moved.path, server.url, ledger, out, config, chunk_size=rng.choice(RERUN_CHUNKS),
                   concurrency=rng.choice(RERUN_CONCURRENCY), extra=["--batch-id", batch])
    assert rerun.chunk_size != first.chunk_size and rerun.concurrency != first.concurrency
    where = (f"trial {trial} (seed {seed}, PAYOUT_CHAOS_SEED={seed0}): first run chunk {first.chunk_size} x "
             f"{first.concurrency}, re-run chunk {rerun.chunk_size} x {rerun.concurrency}; log {log}")
    try:
        codes = rerun.run_until_done(log, moved.final_code)
        exit_codes.update(str(c) for c in codes)
        verdict = check_exactly_once(moved, bonuses_since(server.url, before), ledger, out)
    except AssertionError as e:
        raise AssertionError(f"{where}: {e}") from e
    assert not has_traceback(log.read_text(encoding="utf-8", errors="replace")), f"{where}: a traceback"
    verdict.add_to(figures)
    figures["trials"] += 1
    figures["reruns"] += len(codes)
    figures["rows"] += moved.n_rows


@pytest.mark.timeout(240)
@pytest.mark.parametrize("how", ["kill_9_during_recovery", "recovery_refused_by_server"])
def test_recovery_interrupted_then_next_run_still_recovers_before_paying(tmp_path: Path, how: str) -> None:
    """A paid sheet, its ledger lost; the first run on the new ledger does not finish recovering (SIGKILL while
    it waits for the server's still-running operations, or every listing request answered 500). The run after
    that, with another chunk size, must recover first: the server already paid every row."""
    config = write_config(tmp_path / "chaos.toml")
    with SandboxProcess(tmp_path / "sandbox.sqlite", "--faults", "slow_op_ms=3000") as server:
        sheet = make_sheet(tmp_path / "interrupted.csv", 40, user_base=7_000_000, seed=11, n_invalid=2,
                           n_duplicates=2)
        ledger, out, log = tmp_path / "ledger.sqlite", tmp_path / "reports", tmp_path / "payout.log"
        first = Payout(sheet.path, server.url, ledger, out, config, chunk_size=10, concurrency=4)
        proc = first.start(log)
        wait_for(lambda: post_count(server.url) >= 4 or proc.poll() is not None, "4 POSTs", 60)
        assert kill9(proc), "the first run ended before its 4 operations finished"
        delete_ledger(ledger)  # the server holds 4 running operations: every valid row is being paid

        if how == "kill_9_during_recovery":
            listings = request_count(server.url, "GET /api/v1/operations")
            proc = first.start(log)  # recovery lists the operations, then waits (1 s polls) for the running ones
            wait_for(lambda: request_count(server.url, "GET /api/v1/operations") > listings
                     or proc.poll() is not None, "the recovery listing", 60)
            time.sleep(0.3)
            assert kill9(proc), "the interrupted run ended before the kill"
        else:
            set_faults(server.url, "http_500=1.0")
            code = first.run(log, timeout=120)
            assert code == 3, f"a refused recovery should stop the run with exit 3, got {code}"
            set_faults(server.url, "")
        wait_for(lambda: stats(server.url)["operations"].get("SUCCESS", 0) >= 4, "the 4 operations", 30)
        assert len(bonuses_since(server.url, 0)) == sum(sheet.expected.values())

        rerun = Payout(sheet.path, server.url, ledger, out, config, chunk_size=20, concurrency=2)
        codes = rerun.run_until_done(log, sheet.final_code)
        bonuses = bonuses_since(server.url, 0)
        paid = paid_multiset(bonuses)
        doubles = sum(max(0, paid[k] - n) for k, n in sheet.expected.items())
        record(f"ledger_lost_recovery_interrupted_{how}", {
            "rows": sheet.n_rows, "expected_bonuses": sum(sheet.expected.values()), "bonuses": len(bonuses),
            "double_payments": doubles, "rerun_codes": codes})
        assert doubles == 0, (
            f"{doubles} of {sum(sheet.expected.values())} rows paid twice: the run after the interrupted recovery "
            "did not recover again (Ledger.bind_target answers False for a target it already knows, even while "
            f"meta 'recovered_through' is unset) and re-sent every row under new operation ids; log {log}")
        check_exactly_once(sheet, bonuses, ledger, out)
