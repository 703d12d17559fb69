"""Issue 8's everyday edits and settings, each reproduced end to end and counted on the server's own listing.

Each test failed on the code before the issue (a row paid twice, a worker never paid, or a false all-clear)
and passes after it. `payout` runs in-process against a real sandbox over HTTP, with a real SQLite ledger.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from payout_helpers import last_rows, paid_on_server, server_bonuses
from sandbox_fixtures import TOKEN, set_faults
from sheet_factory import row, uid, write_csv


def run(payout, url: str, *sheets: Path, batch: str = "week-48", **kw: str) -> int:
    flags = [x for k, v in kw.items() for x in (f"--{k.replace('_', '-')}", v)]
    return payout("run", *map(str, sheets), "--api-url", url, "--batch-id", batch, *flags)


# -- a row paid twice with the ledger intact ------------------------------------------------------


def test_deleting_or_fixing_an_invalid_copy_does_not_pay_the_valid_row_again(sandbox, payout, tmp_path) -> None:
    broken_copy = row(1, without_message="flase")
    sheet = write_csv(tmp_path / "p.csv", [broken_copy, row(1), row(2)])
    assert run(payout, sandbox.url, sheet) == 1  # the broken copy is invalid
    assert paid_on_server(sandbox.url) == {(uid(1), "1.50"): 1, (uid(2), "1.50"): 1}

    write_csv(sheet, [row(1), row(2)])  # finance deletes the broken copy, as the README says
    assert run(payout, sandbox.url, sheet) == 0
    assert set(last_rows(tmp_path / "reports")["status"]) == {"already_paid"}

    write_csv(sheet, [row(1), row(1), row(2)])  # ... or fixes it: now an exact copy of a paid row
    assert run(payout, sandbox.url, sheet) == 1
    assert last_rows(tmp_path / "reports")["status"].tolist() == ["already_paid", "duplicate", "already_paid"]
    assert paid_on_server(sandbox.url) == {(uid(1), "1.50"): 1, (uid(2), "1.50"): 1}


def test_reordered_rows_are_not_paid_again(sandbox, payout, tmp_path) -> None:
    """An invalid copy before or after its valid twin, and the rest in another order: no key changes."""
    rows = [row(1, amount="1.25", without_message="flase")] + [row(i, amount=f"{i}.25") for i in range(1, 8)] + [
        row(9, amount="oops")]
    sheet = write_csv(tmp_path / "p.csv", rows)
    assert run(payout, sandbox.url, sheet) == 1
    write_csv(sheet, rows[::-1])
    assert run(payout, sandbox.url, sheet) == 1  # still the invalid rows
    assert Counter(last_rows(tmp_path / "reports")["status"]) == {"already_paid": 7, "invalid": 2}
    assert sum(paid_on_server(sandbox.url).values()) == 7


def test_a_corrected_failed_row_is_superseded_never_resent_by_retry(sandbox, payout, tmp_path) -> None:
    """A run fails every operation; finance lowers row 2 from 1.00 to 0.50 and re-runs; `retry` must not
    re-send the stale 1.00 row (the worker got 1.50)."""
    rows = [row(1, amount="1.00"), row(2, amount="1.00"), row(3, amount="1.00")]
    sheet = write_csv(tmp_path / "p.csv", rows)
    set_faults(sandbox.url, "op_fail=1.0")
    assert run(payout, sandbox.url, sheet) == 1
    set_faults(sandbox.url, "")
    rows[1] = row(2, amount="0.50")
    write_csv(sheet, rows)
    assert run(payout, sandbox.url, sheet) == 0
    assert payout("retry", "--api-url", sandbox.url) == 0
    assert paid_on_server(sandbox.url) == {(uid(1), "1.00"): 1, (uid(2), "0.50"): 1, (uid(3), "1.00"): 1}
    summary = (sorted((tmp_path / "reports").glob("*/summary.json"))[-2]).read_text()
    assert '"superseded": 1' in summary


def test_a_deleted_failed_row_is_not_resent_by_retry(sandbox, payout, tmp_path) -> None:
    sheet = write_csv(tmp_path / "p.csv", [row(1), row(2)])
    set_faults(sandbox.url, "op_fail=1.0")
    assert run(payout, sandbox.url, sheet) == 1
    set_faults(sandbox.url, "")
    write_csv(sheet, [row(1)])  # row 2 was not owed after all
    assert run(payout, sandbox.url, sheet) == 0
    assert payout("retry", "--api-url", sandbox.url) == 0
    assert paid_on_server(sandbox.url) == {(uid(1), "1.50"): 1}


def test_a_renamed_file_or_another_sheet_order_pays_nothing_again(sandbox, payout, tmp_path) -> None:
    a = write_csv(tmp_path / "a.csv", [row(1), row(2)])
    b = write_csv(tmp_path / "b.csv", [row(3)])
    # the batch is named explicitly: identity never comes from file names (refused without it)
    assert payout("run", str(a), "--api-url", sandbox.url, "--batch-id", "") == 2
    assert server_bonuses(sandbox.url) == []
    assert run(payout, sandbox.url, a, b) == 0
    renamed = tmp_path / "payouts (1).csv"
    shutil.copy(a, renamed)
    assert run(payout, sandbox.url, b, renamed) == 0
    assert set(last_rows(tmp_path / "reports")["status"]) == {"already_paid"}
    assert sum(paid_on_server(sandbox.url).values()) == 3


@pytest.mark.parametrize("direction", ["added", "dropped"])
def test_adding_or_dropping_a_bonus_key_column_pays_nothing_again(sandbox, payout, tmp_path, direction) -> None:
    plain = [row(1), row(2)]
    keyed = [row(1, bonus_key="PAY-1"), row(2, bonus_key="PAY-2")]
    first, second = (plain, keyed) if direction == "added" else (keyed, plain)
    sheet = write_csv(tmp_path / "p.csv", first)
    assert run(payout, sandbox.url, sheet) == 0
    write_csv(sheet, second)
    assert run(payout, sandbox.url, sheet) == 0
    assert set(last_rows(tmp_path / "reports")["status"]) == {"already_paid"}
    assert sum(paid_on_server(sandbox.url).values()) == 2


# -- a worker never paid, or a wrong "paid" -------------------------------------------------------


def test_a_reused_bonus_key_with_other_content_is_a_row_error_naming_the_payment(sandbox, payout, tmp_path) -> None:
    sheet = write_csv(tmp_path / "p.csv", [row(1, amount="8.00", bonus_key="1")])
    assert run(payout, sandbox.url, sheet) == 0
    write_csv(sheet, [row(2, amount="7.00", bonus_key="1")])  # next week's sheet reuses key 1
    assert run(payout, sandbox.url, sheet) == 1
    [r] = last_rows(tmp_path / "reports").to_dict("records")
    assert r["status"] == "invalid" and pd.isna(r["bonus_id"])
    [err] = r["errors"]
    assert err["code"] == "bonus_key_reused" and uid(1) in err["message"] and "$8.00" not in err["message"]
    assert "8.00" in err["message"]
    assert paid_on_server(sandbox.url) == {(uid(1), "8.00"): 1}


def test_a_reused_bonus_key_on_a_fresh_ledger_is_never_reported_paid(sandbox, payout, tmp_path) -> None:
    """On a lost ledger the old log was accepted as this row's payment (another user, another amount)."""
    sheet = write_csv(tmp_path / "p.csv", [row(1, amount="8.00", bonus_key="1")])
    assert run(payout, sandbox.url, sheet) == 0
    (tmp_path / "ledger.sqlite").unlink()
    write_csv(sheet, [row(2, amount="7.00", bonus_key="1")])
    assert run(payout, sandbox.url, sheet) == 1
    [r] = last_rows(tmp_path / "reports").to_dict("records")
    assert r["status"] == "invalid" and r["errors"][0]["code"] == "bonus_key_reused"
    assert paid_on_server(sandbox.url) == {(uid(1), "8.00"): 1}


def test_a_look_alike_of_a_recent_payment_under_another_batch_is_held(sandbox, payout, tmp_path) -> None:
    sheet = write_csv(tmp_path / "p.csv", [row(1), row(2, amount="3.00")])
    assert run(payout, sandbox.url, sheet, batch="w48") == 0
    write_csv(sheet, [row(1), row(3)])  # next batch repeats row 1 by mistake
    assert run(payout, sandbox.url, sheet, batch="w49") == 1
    report = last_rows(tmp_path / "reports")
    assert report["status"].tolist() == ["held_repeat", "paid"]
    assert "w48" in report["note"][0] and "--allow-repeats" in report["note"][0]
    assert paid_on_server(sandbox.url) == {(uid(1), "1.50"): 1, (uid(2), "3.00"): 1, (uid(3), "1.50"): 1}
    assert payout("run", str(sheet), "--api-url", sandbox.url, "--batch-id", "w49", "--allow-repeats") == 0
    assert paid_on_server(sandbox.url)[(uid(1), "1.50")] == 2


def test_a_ledger_belongs_to_one_target(sandbox, payout, tmp_path, capsys) -> None:
    from pipeline.sandbox import SandboxServer

    sheet = write_csv(tmp_path / "p.csv", [row(1)])
    assert run(payout, sandbox.url, sheet) == 0
    with SandboxServer(tmp_path / "other.sqlite", token=TOKEN) as other:
        capsys.readouterr()
        assert run(payout, other.url, sheet) == 2
        err = capsys.readouterr().err
        assert sandbox.url in err and other.url in err
        assert server_bonuses(other.url) == []


# -- ledger lost ----------------------------------------------------------------------------------


def test_a_lost_ledger_is_rebuilt_from_the_server_before_paying(sandbox, payout, tmp_path, capsys) -> None:
    rows = [row(i, amount=f"{i}.10") for i in range(1, 13)]
    sheet = write_csv(tmp_path / "p.csv", rows)
    assert run(payout, sandbox.url, sheet, chunk_size="5") == 0
    (tmp_path / "ledger.sqlite").unlink()
    write_csv(sheet, [row(99)] + rows[::-1])  # one row added at the top, the rest reordered
    capsys.readouterr()
    assert run(payout, sandbox.url, sheet, chunk_size="7", concurrency="2") == 0
    report = last_rows(tmp_path / "reports")
    assert report["status"].tolist() == ["paid"] + ["already_paid"] * 12
    assert "3 operation(s) it did not know, 12 row(s) paid" in capsys.readouterr().out
    expected = {(uid(i), f"{i}.10"): 1 for i in range(1, 13)} | {(uid(99), "1.50"): 1}
    assert paid_on_server(sandbox.url) == expected


def test_payout_recover_rebuilds_the_ledger_on_demand(sandbox, payout, tmp_path, capsys) -> None:
    sheet = write_csv(tmp_path / "p.csv", [row(1), row(2)])
    assert run(payout, sandbox.url, sheet) == 0
    (tmp_path / "ledger.sqlite").unlink()
    capsys.readouterr()
    assert payout("recover", "--api-url", sandbox.url, "--since", "2000-01-01") == 0
    assert "2 row(s) paid" in capsys.readouterr().out
    assert run(payout, sandbox.url, sheet) == 0
    assert set(last_rows(tmp_path / "reports")["status"]) == {"already_paid"}


# -- unbounded or unclear -------------------------------------------------------------------------


def test_an_operation_stuck_running_is_waited_for_at_most_max_wait(sandbox, payout, tmp_path) -> None:
    sheet = write_csv(tmp_path / "p.csv", [row(1), row(2)])
    set_faults(sandbox.url, "slow_op_ms=4000")
    assert run(payout, sandbox.url, sheet, max_wait="1") == 3
    assert set(last_rows(tmp_path / "reports")["status"]) == {"pending"}
    set_faults(sandbox.url, "")
    # the operation is still RUNNING on the server; the next run resumes it (never a second POST)
    assert run(payout, sandbox.url, sheet, max_wait="120") == 0
    assert paid_on_server(sandbox.url) == {(uid(1), "1.50"): 1, (uid(2), "1.50"): 1}


def test_an_unwritable_report_folder_is_refused_before_anything_is_sent(sandbox, payout, tmp_path, capsys) -> None:
    sheet = write_csv(tmp_path / "p.csv", [row(1)])
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    capsys.readouterr()
    assert run(payout, sandbox.url, sheet) == 0
    from pipeline.cli import main

    code = main(["run", str(sheet), "--api-url", sandbox.url, "--batch-id", "w50", "--out", str(blocker / "r"),
                 "--ledger", str(tmp_path / "ledger.sqlite")])
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(blocker) in err
    assert sum(paid_on_server(sandbox.url).values()) == 1
