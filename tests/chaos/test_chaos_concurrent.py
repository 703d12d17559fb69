"""Two `payout run` processes at once.

- One ledger: its flock admits one writer; the other exits 4 ("in use by another payout run") having sent
  nothing, and nothing is paid twice.
- Two ledgers, same sheet, same server: no lock protects this. What protects finance is that operation ids
  are deterministic (uuid5 of batch id, attempt and the chunk's row keys): the second ledger's POSTs get
  409 OPERATION_ALREADY_EXISTS, it reads the same operation's log, and its rows map to the same bonus ids.
  This holds only while both use the same batch id and chunk size (see the README's chaos section).
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pandas as pd
from chaos_helpers import (
    Payout,
    bonuses_since,
    check_exactly_once,
    last_bonus_id,
    last_report,
    make_sheet,
    post_count,
    record,
    wait_for,
    write_config,
)
from sandbox_fixtures import SandboxProcess, stats


def settled_posts(url: str, quiet_s: float = 0.5) -> int:
    """The POST count once it has stopped moving for `quiet_s`."""
    count = post_count(url)
    while True:
        time.sleep(quiet_s)
        now = post_count(url)
        if now == count:
            return count
        count = now


def test_two_runs_on_one_ledger_one_proceeds_the_other_exits_4(tmp_path: Path) -> None:
    config = write_config(tmp_path / "chaos.toml")
    figures = {"double_payments": 0, "lost_rows": 0}
    with SandboxProcess(tmp_path / "sandbox.sqlite", "--faults", "slow_op_ms=200") as server:
        # (a) deterministic: the first run holds the lock (it has POSTed) and is frozen with SIGSTOP.
        sheet = make_sheet(tmp_path / "one_ledger.csv", 1000, user_base=3_000_000, seed=11, n_invalid=5)
        a = Payout(sheet.path, server.url, tmp_path / "ledger.sqlite", tmp_path / "reports", config, chunk_size=200)
        b = Payout(sheet.path, server.url, a.ledger, a.out, config, chunk_size=200)
        before = last_bonus_id(server.url)
        first = a.start(tmp_path / "a.log")
        wait_for(lambda: post_count(server.url) > 0 or first.poll() is not None, "the first run to POST")
        first.send_signal(signal.SIGSTOP)
        try:
            posts_before = settled_posts(server.url)  # a POST already on the wire when A froze still lands
            second_code = b.run(tmp_path / "b.log")
            assert post_count(server.url) == posts_before  # the locked-out run sent nothing
        finally:
            first.send_signal(signal.SIGCONT)
        assert second_code == 4
        assert "in use by another payout run" in (tmp_path / "b.log").read_text()
        assert first.wait(timeout=300) == sheet.final_code
        verdict = check_exactly_once(sheet, bonuses_since(server.url, before), a.ledger, a.out)
        verdict.add_to(figures)

        # (b) both started at the same instant: exactly one of them gets the lock.
        sheet = make_sheet(tmp_path / "race.csv", 1000, user_base=3_100_000, seed=12)
        a = Payout(sheet.path, server.url, tmp_path / "race.sqlite", tmp_path / "race_reports", config,
                   chunk_size=100, concurrency=2)  # 10 operations x 200 ms: the winner outlives the loser's start
        before = last_bonus_id(server.url)
        procs = [a.start(tmp_path / "race_a.log"), a.start(tmp_path / "race_b.log")]
        codes = sorted(p.wait(timeout=300) for p in procs)
        assert codes == sorted([sheet.final_code, 4])
        verdict = check_exactly_once(sheet, bonuses_since(server.url, before), a.ledger, a.out)
        verdict.add_to(figures)
    record("concurrent_runs_one_ledger", {**figures, "exit_codes": codes, "locked_out_exit": second_code})


def test_two_ledgers_same_sheet_map_to_the_same_bonuses(tmp_path: Path) -> None:
    config = write_config(tmp_path / "chaos.toml")
    with SandboxProcess(tmp_path / "sandbox.sqlite", "--faults", "slow_op_ms=150") as server:
        sheet = make_sheet(tmp_path / "shared.csv", 1200, user_base=3_200_000, seed=13, n_duplicates=5)
        runs = [Payout(sheet.path, server.url, tmp_path / f"ledger_{n}.sqlite", tmp_path / f"reports_{n}", config,
                       chunk_size=200, concurrency=3) for n in (1, 2)]
        before = last_bonus_id(server.url)
        # at the same time, then each again (sequentially) to settle whatever the race left open
        procs = [r.start(tmp_path / f"run_{n}.log") for n, r in enumerate(runs)]
        first_codes = [p.wait(timeout=300) for p in procs]
        codes = [r.run_until_done(tmp_path / f"run_{n}.log", sheet.final_code) for n, r in enumerate(runs)]
        bonuses = bonuses_since(server.url, before)
        verdicts = [check_exactly_once(sheet, bonuses, r.ledger, r.out) for r in runs]
        maps = [pd.read_parquet(last_report(r.out) / "rows.parquet").query("status in ['paid', 'already_paid']")
                .set_index("row_key")["bonus_id"].astype(str).sort_index() for r in runs]
        assert maps[0].equals(maps[1])  # the same row -> the same bonus in both ledgers
        # Either the second ledger's POSTs met OPERATION_ALREADY_EXISTS (deterministic operation ids), or its
        # first run, finding the ledger new to this server, recovered the first ledger's operations before sending.
        conflicts = int(stats(server.url)["statuses"].get("409", 0))
        recovered = sum((json.loads(p.read_text()).get("recovery") or {}).get("operations_new", 0)
                        for r in runs for p in r.out.glob("*/summary.json"))
        assert conflicts > 0 or recovered > 0
    record("two_ledgers_same_sheet", {
        "double_payments": sum(v.double_payments for v in verdicts),
        "lost_rows": sum(v.lost_rows + v.extra_payments for v in verdicts),
        "first_exit_codes": first_codes, "reruns": [len(c) for c in codes], "http_409": conflicts,
        "bonuses": len(bonuses)})
