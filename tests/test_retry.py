"""`payout retry` re-submits retryable failures from the ledger alone, and pays each row once."""

from __future__ import annotations

from pathlib import Path

from payout_helpers import paid_multiset, server_bonuses
from sandbox_fixtures import set_faults
from sheet_factory import row, uid, write_csv

from pipeline.report import read_rows


def latest(reports: Path) -> Path:
    return sorted(p for p in reports.iterdir() if p.is_dir())[-1]


def test_retry_pays_rows_whose_operation_failed_without_the_sheet(sandbox, payout, tmp_path) -> None:
    sheet = write_csv(tmp_path / "payouts.csv", [row(i, amount="2.50") for i in range(20)])
    set_faults(sandbox.url, "op_fail=1.0")
    assert payout("run", str(sheet), "--api-url", sandbox.url, "--chunk-size", "8") == 1
    first = read_rows(latest(tmp_path / "reports"))
    assert set(first["status"]) == {"failed"}
    assert {e[0]["code"] for e in first["errors"]} == {"OPERATION_EXECUTION_ERROR"}
    assert server_bonuses(sandbox.url) == []

    set_faults(sandbox.url, "")
    sheet.unlink()  # retry needs only the ledger
    assert payout("retry", "--api-url", sandbox.url) == 0
    retried = read_rows(latest(tmp_path / "reports"))
    assert len(retried) == 20 and set(retried["status"]) == {"paid"}
    assert set(retried["operation_id"]).isdisjoint(first["operation_id"])  # a new attempt, new ids
    assert paid_multiset(server_bonuses(sandbox.url)) == {(uid(i), "2.50"): 1 for i in range(20)}

    assert payout("retry", "--api-url", sandbox.url) == 0  # nothing left: pays nothing
    assert len(server_bonuses(sandbox.url)) == 20


def test_retry_leaves_validation_refusals_alone(tmp_path, payout) -> None:
    from sandbox_fixtures import TOKEN

    from pipeline.sandbox import SandboxServer

    with SandboxServer(tmp_path / "s.sqlite", token=TOKEN, unknown_users={uid(3)}) as server:
        sheet = write_csv(tmp_path / "p.csv", [row(i) for i in range(5)])
        assert payout("run", str(sheet), "--api-url", server.url) == 1
        assert payout("retry", "--api-url", server.url) == 0
        assert len(read_rows(latest(tmp_path / "reports"))) == 0
        assert len(server_bonuses(server.url)) == 4


def test_rerun_of_the_sheet_gives_failed_rows_a_new_attempt(sandbox, payout, tmp_path) -> None:
    sheet = write_csv(tmp_path / "payouts.csv", [row(i) for i in range(6)])
    set_faults(sandbox.url, "op_fail=1.0")
    assert payout("run", str(sheet), "--api-url", sandbox.url) == 1
    set_faults(sandbox.url, "")
    assert payout("run", str(sheet), "--api-url", sandbox.url) == 0
    assert set(read_rows(latest(tmp_path / "reports"))["status"]) == {"paid"}
    assert len(server_bonuses(sandbox.url)) == 6
