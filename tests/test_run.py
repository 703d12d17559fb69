"""`payout run` end to end against the sandbox over real HTTP, checked through the server's own listing."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
from payout_helpers import paid_multiset, server_bonuses
from sheet_factory import row, uid, write_csv

from pipeline.report import read_rows


def latest_run(reports: Path) -> Path:
    return sorted(p for p in reports.iterdir() if p.is_dir())[-1]


def mixed_sheet(path: Path, n_valid: int = 30) -> tuple[Path, Counter]:
    """A sheet with n_valid unique rows, 3 invalid rows and 2 duplicates; returns the expected payouts."""
    rows = [row(i, amount=f"{1 + i % 7}.{i % 100:02d}") for i in range(n_valid)]
    rows.insert(5, row(900, user_id="not-a-user"))
    rows.insert(9, row(901, amount="1.234"))
    rows.insert(12, row(902, amount=""))
    rows.insert(15, dict(rows[3]))
    rows.append(dict(rows[20]))
    expected = Counter((uid(i), f"{1 + i % 7}.{i % 100:02d}") for i in range(n_valid))
    return write_csv(path, rows), expected


def test_run_pays_every_valid_unique_row_exactly_once(sandbox, payout, tmp_path: Path) -> None:
    sheet, expected = mixed_sheet(tmp_path / "payouts.csv")
    code = payout("run", str(sheet), "--api-url", sandbox.url, "--chunk-size", "7")
    assert code == 1  # invalid and duplicate rows need attention
    assert paid_multiset(server_bonuses(sandbox.url)) == expected

    rows = read_rows(latest_run(tmp_path / "reports"))
    assert len(rows) == 35 and rows["source_row"].tolist() == list(range(2, 37))
    assert rows["status"].value_counts().to_dict() == {"paid": 30, "invalid": 3, "duplicate": 2}
    paid = rows[rows["status"] == "paid"]
    assert paid["bonus_id"].notna().all() and paid["operation_id"].notna().all()
    assert paid["operation_id"].nunique() == 5  # 30 rows in chunks of 7
    invalid = rows[rows["status"] == "invalid"]
    assert all(len(e) >= 1 for e in invalid["errors"])
    assert {e[0]["column"] for e in invalid["errors"]} == {"user_id", "amount"}
    dup = rows[rows["status"] == "duplicate"]
    assert dup["note"].str.contains("duplicate of").all()


def test_second_run_of_the_same_sheet_pays_nothing_and_reports_already_paid(sandbox, payout, tmp_path) -> None:
    sheet, expected = mixed_sheet(tmp_path / "payouts.csv")
    payout("run", str(sheet), "--api-url", sandbox.url)
    first = latest_run(tmp_path / "reports")
    assert payout("run", str(sheet), "--api-url", sandbox.url) == 1
    second = latest_run(tmp_path / "reports")
    assert first != second
    assert paid_multiset(server_bonuses(sandbox.url)) == expected
    rows = read_rows(second)
    assert rows["status"].value_counts().to_dict() == {"already_paid": 30, "invalid": 3, "duplicate": 2}
    before = read_rows(first).set_index("row_key")["bonus_id"]
    after = rows[rows["status"] == "already_paid"].set_index("row_key")["bonus_id"]
    assert (after == before[after.index]).all()


def test_clean_sheet_exits_zero_and_summary_accounts_for_the_money(sandbox, payout, tmp_path) -> None:
    sheet = write_csv(tmp_path / "clean.csv", [row(i, amount="2.10") for i in range(10)])
    assert payout("run", str(sheet), "--api-url", sandbox.url) == 0
    summary = json.loads((latest_run(tmp_path / "reports") / "summary.json").read_text())
    assert summary["success_count"] == 10 and summary["failed_count"] == 0
    assert summary["amount_paid"] == "21.00"
    ops = pd.read_parquet(latest_run(tmp_path / "reports") / "operations.parquet")
    assert ops["status"].tolist() == ["SUCCESS"] and ops["success_count"].tolist() == [10]


def test_dry_run_plans_and_sends_nothing(sandbox, payout, tmp_path) -> None:
    sheet, _ = mixed_sheet(tmp_path / "payouts.csv")
    assert payout("run", str(sheet), "--api-url", sandbox.url, "--dry-run") == 1
    assert server_bonuses(sandbox.url) == []
    rows = read_rows(latest_run(tmp_path / "reports"))
    assert rows["status"].value_counts().to_dict() == {"planned": 30, "invalid": 3, "duplicate": 2}
    assert rows.loc[rows["status"] == "planned", "operation_id"].notna().all()


def test_rows_the_server_rejects_are_failed_with_its_error(tmp_path, payout) -> None:
    from sandbox_fixtures import TOKEN

    from pipeline.sandbox import SandboxServer

    ghost = uid(7)
    with SandboxServer(tmp_path / "s.sqlite", token=TOKEN, unknown_users={ghost}) as server:
        sheet = write_csv(tmp_path / "p.csv", [row(i) for i in range(10)])
        assert payout("run", str(sheet), "--api-url", server.url) == 1
        rows = read_rows(latest_run(tmp_path / "reports"))
        failed = rows[rows["status"] == "failed"]
        assert failed["user_id"].tolist() == [ghost]
        assert failed["errors"].iloc[0][0]["code"] == "ENTITY_DOES_NOT_EXIST"
        assert len(server_bonuses(server.url)) == 9


def test_unreadable_sheet_is_exit_2_with_a_message(payout, tmp_path, capsys) -> None:
    assert payout("run", str(tmp_path / "missing.csv"), "--dry-run") == 2
    assert "missing.csv" in capsys.readouterr().err


def test_refused_token_is_exit_3(sandbox, payout, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("TOLOKA_TOKEN", "wrong-token-value")
    sheet = write_csv(tmp_path / "p.csv", [row(1)])
    assert payout("run", str(sheet), "--api-url", sandbox.url) == 3
    err = capsys.readouterr()
    assert "wrong-token-value" not in err.err + err.out


def test_the_same_sheet_twice_is_a_usage_error(payout, tmp_path) -> None:
    sheet = write_csv(tmp_path / "p.csv", [row(1)])
    assert payout("run", str(sheet), str(sheet), "--dry-run") == 2


def test_unreachable_api_is_exit_3_and_rows_stay_pending_for_the_next_run(payout, tmp_path) -> None:
    import socket

    from sandbox_fixtures import TOKEN

    from pipeline.sandbox import SandboxServer

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        dead = f"http://127.0.0.1:{port}"
    config = tmp_path / "fast.toml"
    config.write_text("max_retries = 1\nbackoff_base_s = 0.01\nrequest_timeout_s = 2.0\n")
    sheet = write_csv(tmp_path / "p.csv", [row(i) for i in range(4)])
    assert payout("run", str(sheet), "--api-url", dead, "--config", str(config)) == 3
    assert set(read_rows(latest_run(tmp_path / "reports"))["status"]) == {"pending"}
    with SandboxServer(tmp_path / "s.sqlite", token=TOKEN, port=port) as sandbox:  # the same target comes back
        assert payout("run", str(sheet), "--api-url", sandbox.url) == 0
        assert len(server_bonuses(sandbox.url)) == 4
