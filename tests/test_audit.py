"""`payout audit` finds every kind of disagreement between the ledger and the server's own listing."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pandas as pd
from sheet_factory import row, uid, write_csv


def audit_table(out: Path) -> pd.DataFrame:
    [path] = sorted(out.glob("*/audit.parquet"), key=lambda p: p.stat().st_mtime)[-1:]
    return pd.read_parquet(path)


def pay_sheet(sandbox, payout, tmp_path: Path, n: int = 12) -> Path:
    sheet = write_csv(tmp_path / "payouts.csv", [row(i, amount="4.00") for i in range(n)])
    assert payout("run", str(sheet), "--api-url", sandbox.url) == 0
    return sandbox.db_path


def test_audit_of_an_untouched_server_matches_everything(sandbox, payout, tmp_path, capsys) -> None:
    pay_sheet(sandbox, payout, tmp_path)
    capsys.readouterr()
    assert payout("audit", "--api-url", sandbox.url) == 0
    counts = audit_table(tmp_path / "reports")["kind"].value_counts().to_dict()
    assert counts == {"matched": 12}
    assert "matched" in capsys.readouterr().out


def test_audit_finds_a_deleted_an_added_and_a_changed_bonus(sandbox, payout, tmp_path) -> None:
    db = pay_sheet(sandbox, payout, tmp_path)
    with sqlite3.connect(db) as con:
        ids = [r[0] for r in con.execute("SELECT id FROM bonuses ORDER BY id")]
        con.execute("DELETE FROM bonuses WHERE id = ?", (ids[0],))
        con.execute("UPDATE bonuses SET amount = '40.00' WHERE id = ?", (ids[1],))
        con.execute(
            "INSERT INTO bonuses(id, user_id, amount, without_message, created_us) VALUES (?, ?, '4.00', 1, ?)",
            (ids[-1] + 1000, uid(5), int(time.time() * 1e6)))
    assert payout("audit", "--api-url", sandbox.url) == 1
    table = audit_table(tmp_path / "reports")
    assert table["kind"].value_counts().to_dict() == {"matched": 10, "missing": 1, "mismatched": 1, "unexpected": 1}
    missing = table[table["kind"] == "missing"].iloc[0]
    assert missing["bonus_id"] == str(ids[0]) and missing["source_row"] == 2
    changed = table[table["kind"] == "mismatched"].iloc[0]
    assert (changed["ledger_amount_cents"], changed["server_amount_cents"]) == (400, 4000)
    stray = table[table["kind"] == "unexpected"].iloc[0]
    assert stray["bonus_id"] == str(ids[-1] + 1000) and stray["user_id"] == uid(5)


def test_audit_of_one_run_scopes_to_its_batch(sandbox, payout, tmp_path) -> None:
    pay_sheet(sandbox, payout, tmp_path)
    other = write_csv(tmp_path / "other.csv", [row(100 + i, amount="1.00") for i in range(3)])
    assert payout("run", str(other), "--api-url", sandbox.url) == 0
    run_id = sorted(p.name for p in (tmp_path / "reports").iterdir())[-1]
    assert payout("audit", "--api-url", sandbox.url, "--run", run_id) == 0
    table = pd.read_parquet(tmp_path / "reports" / run_id / "audit.parquet")
    assert table["kind"].value_counts().to_dict() == {"matched": 3}


def test_reconcile_names_the_unknown_row_an_unexpected_bonus_probably_belongs_to() -> None:
    from pipeline.audit import reconcile

    cols = ["row_key", "source_file", "source_row", "user_id", "amount_cents", "bonus_id"]
    paid = pd.DataFrame([["k1", "s.csv", 2, uid(1), 100, "100000000001"]], columns=cols)
    unknown = pd.DataFrame([["k2", "s.csv", 3, uid(2), 250, None]], columns=cols)
    server = pd.DataFrame([["100000000001", uid(1), 100, "t"], ["100000000002", uid(2), 250, "t"]],
                          columns=["bonus_id", "user_id", "amount_cents", "created"])
    result = reconcile(paid, {"100000000001"}, server, unknown).set_index("kind")
    assert "row s.csv:3" in result.loc["unexpected", "detail"]
