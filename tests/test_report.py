from __future__ import annotations

import dataclasses
import json
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.report import STATUSES, format_summary, read_rows, summarize, write_report

BAD_AMOUNT = {"column": "amount", "code": "amount_not_a_number", "message": "'abc' is not a number"}
BAD_USER = {"column": "user_id", "code": "missing", "message": "user_id is empty"}
META = {
    "batch_id": "payouts",
    "env": "local",
    "api_url": None,
    "dry_run": False,
    "started": "2026-11-25T10:15:00+00:00",
    "finished": "2026-11-25T10:16:30.5+00:00",
    "operator": "finance-bot",
}


def _rows() -> pd.DataFrame:
    data = [
        # status, cents, errors, operation_id, bonus_id, note
        ("paid", 150, [], "op-1", "b-1", None),
        ("paid", 123450, [], "op-1", "b-2", None),
        ("failed", 1, [{"column": "user_id", "code": "USER_BLOCKED", "message": "blocked"}], "op-1", None, None),
        ("invalid", None, [BAD_AMOUNT, BAD_USER], None, None, None),
        ("duplicate", 150, [], None, None, "duplicate of payouts.csv:2"),
        ("already_paid", 999_999_999_999, [], None, "b-0", "paid by run 20261124T090000Z"),
        ("pending", 200, [], "op-2", None, "re-run after 2026-11-26 00:00 UTC"),
        ("unknown", 300, [], "op-3", None, None),
    ]
    return pd.DataFrame(
        {
            "run_id": "20261125T101500Z",
            "source_file": "payouts.csv",
            "source_row": range(2, 2 + len(data)),
            "row_key": [f"key{i}" for i in range(len(data))],
            "user_id": [f"u{i}" for i in range(len(data))],
            "amount_cents": pd.array([d[1] for d in data], dtype="Int64"),
            "status": [d[0] for d in data],
            "errors": [d[2] for d in data],
            "operation_id": [d[3] for d in data],
            "bonus_id": [d[4] for d in data],
            "note": [d[5] for d in data],
        }
    )


def _operations() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"operation_id": "op-1", "chunk_no": 0, "attempt": 1, "status": "SUCCESS",
             "submitted": "2026-11-25T10:15:01.123", "started": "2026-11-25T10:15:01.200",
             "finished": "2026-11-25T10:15:03.000", "progress": 100, "total_count": 3, "valid_count": 2,
             "not_valid_count": 1, "success_count": 2, "failed_count": 1, "item_count": 3},
            {"operation_id": "op-2", "chunk_no": 1, "attempt": 1, "status": "RUNNING",
             "submitted": "2026-11-25T10:15:02.000"},
        ]
    )


def test_rows_parquet_has_explicit_types_and_exact_decimal_amounts(tmp_path: Path):
    run_dir = write_report(tmp_path, "20261125T101500Z", _rows(), _operations(), META).run_dir
    assert run_dir == tmp_path / "20261125T101500Z"
    table = pq.read_table(run_dir / "rows.parquet")
    schema = table.schema
    assert schema.field("amount").type == pa.decimal128(12, 2)
    assert schema.field("source_row").type == pa.int64()
    assert schema.field("errors").type == pa.list_(
        pa.struct([("column", pa.string()), ("code", pa.string()), ("message", pa.string())])
    )
    for name in ("run_id", "source_file", "row_key", "user_id", "status", "operation_id", "bonus_id", "note"):
        assert schema.field(name).type == pa.string()
    assert table.column("amount").to_pylist() == [
        Decimal("1.50"), Decimal("1234.50"), Decimal("0.01"), None, Decimal("1.50"),
        Decimal("9999999999.99"), Decimal("2.00"), Decimal("3.00"),
    ]
    assert table.column("errors").to_pylist()[3] == [BAD_AMOUNT, BAD_USER]
    assert table.column("errors").to_pylist()[0] == []
    assert table.column("note").to_pylist()[4] == "duplicate of payouts.csv:2"
    assert sorted(p.name for p in run_dir.iterdir()) == ["operations.parquet", "rows.parquet", "summary.json"]


def test_read_rows_gives_back_what_was_written(tmp_path: Path):
    rows = _rows()
    back = read_rows(write_report(tmp_path, "r", rows, _operations(), META).run_dir)
    assert list(back.columns) == list(rows.columns)
    assert back["amount_cents"].dtype == "Int64"
    assert back["amount_cents"].tolist() == rows["amount_cents"].tolist()
    assert back["errors"].tolist() == rows["errors"].tolist()
    assert back["source_row"].tolist() == rows["source_row"].tolist()
    assert back["bonus_id"].isna().tolist() == rows["bonus_id"].isna().tolist()


def test_operations_parquet_keeps_toloka_fields_and_nulls_what_is_not_known_yet(tmp_path: Path):
    table = pq.read_table(write_report(tmp_path, "r", _rows(), _operations(), META).run_dir / "operations.parquet")
    assert table.schema.field("submitted").type == pa.string()
    assert table.schema.field("success_count").type == pa.int64()
    first, second = table.to_pylist()
    assert first["submitted"] == "2026-11-25T10:15:01.123" and first["not_valid_count"] == 1
    assert second["status"] == "RUNNING" and second["finished"] is None and second["item_count"] is None


def test_dry_run_with_no_operations_still_writes_an_empty_operations_file(tmp_path: Path):
    rows = _rows().assign(status="planned")
    run_dir = write_report(tmp_path, "r", rows, pd.DataFrame(), {**META, "dry_run": True}).run_dir
    assert pq.read_table(run_dir / "operations.parquet").num_rows == 0


def test_summary_json_counts_every_status_and_sums_amounts_exactly(tmp_path: Path):
    run_dir = write_report(tmp_path, "20261125T101500Z", _rows(), _operations(), META).run_dir
    text = (run_dir / "summary.json").read_text()
    summary = json.loads(text)
    assert list(summary) == sorted(summary) and text.startswith("{\n  ")
    assert summary["counts"] == {s: (2 if s == "paid" else 0 if s in ("planned", "held_repeat", "control_total") else 1)
                                 for s in STATUSES}
    assert summary["run_id"] == "20261125T101500Z" and summary["operator"] == "finance-bot"
    assert summary["rows_total"] == 8
    # failed_count is what the server refused; the invalid row is never sent and counted on its own
    assert (summary["success_count"], summary["failed_count"], summary["pending_count"]) == (2, 1, 2)
    assert (summary["invalid_count"], summary["duplicate_count"]) == (1, 1)
    assert summary["amount_paid"] == "1236.00"
    assert summary["amount_failed"] == "0.01"
    assert summary["amount_pending"] == "5.00"
    assert summary["amounts"]["already_paid"] == "9999999999.99"
    assert summary["duration_s"] == 90.5
    assert summary["reports"]["rows"] == str(run_dir / "rows.parquet")


def test_bad_rows_are_refused_and_leave_no_temp_files(tmp_path: Path):
    with pytest.raises(ValueError, match="unknown statuses: lost"):
        write_report(tmp_path, "r", _rows().assign(status="lost"), _operations(), META)
    with pytest.raises(ValueError, match="lack columns: note"):
        write_report(tmp_path, "r", _rows().drop(columns="note"), _operations(), META)
    assert list((tmp_path / "r").iterdir()) == []


def test_format_summary_tells_finance_amounts_and_what_needs_attention():
    summary = summarize(_rows(), {**META, "run_id": "r1", "rerun_after": "2026-11-26 00:00 UTC"})
    text = format_summary(dataclasses.replace(summary, reports={"rows": "data/reports/r1/rows.parquet"}))
    assert "  Paid                 2 rows          $1,236.00\n" in text
    assert "  Already paid         1 row   $9,999,999,999.99\n" in text
    assert "1 row invalid — see the errors column" in text
    assert "1 row pending — run `payout run` again after 2026-11-26 00:00 UTC" in text
    assert "1 row of unknown outcome — never re-sent; the next run asks the server again" in text
    assert "Planned" not in text
    assert text.endswith("Report: data/reports/r1/rows.parquet")


def test_a_clean_run_needs_no_attention():
    rows = _rows().iloc[:2]
    text = format_summary(summarize(rows, {"run_id": "r2"}))
    assert "Nothing needs attention." in text and "Total                2 rows" in text
