"""The ledger contract against both backends, a real SQLite file and a real PostgreSQL database: intent,
transitions, the writer lock (SQLite), claims (PostgreSQL), schema versions and migrations."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipeline.errors import LedgerLocked
from pipeline.ledger import Ledger, RowResult


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """Where a fresh ledger lives: a file, or a fresh database of the session's throwaway PostgreSQL server."""
    if request.param == "sqlite":
        return tmp_path / "ledger.sqlite"
    return str(request.getfixturevalue("pg_url"))


def planned_frame(keys: list[str], op_id: str = "op-1", attempt: int = 1) -> pd.DataFrame:
    return pd.DataFrame({
        "row_key": keys, "source_file": "s.csv", "source_row": range(2, 2 + len(keys)),
        "user_id": ["a" * 32] * len(keys), "amount_cents": [150] * len(keys), "chunk_no": 0,
        "operation_id": op_id, "attempt": attempt,
    })


def test_intent_is_committed_and_visible_to_a_new_connection(location: str | Path) -> None:
    path = location
    with Ledger(path) as ledger:
        ledger.start_run("r1", "b", "run", {})
        ledger.record_intent("r1", "b", planned_frame(["k1", "k2"]), [b"{}", b"{}"])
    with Ledger(path) as ledger:
        known = ledger.known_rows(["k1", "k2", "k3"])
        assert sorted(known["row_key"]) == ["k1", "k2"]
        assert set(known["status"]) == {"planned"}
        [op] = ledger.open_operations()
        assert (op.operation_id, op.item_count, op.state) == ("op-1", 2, "planned")


def test_outcome_moves_rows_to_paid_and_failed_and_closes_the_operation(location: str | Path) -> None:
    with Ledger(location) as ledger:
        ledger.record_intent("r1", "b", planned_frame(["k1", "k2"]), [b"{}", b"{}"])
        ledger.mark_submitted("op-1", {"status": "RUNNING", "submitted": "2026-01-01T00:00:00"})
        ledger.record_outcome("op-1", {"status": "SUCCESS"}, [
            RowResult("k1", "paid", bonus_id="100000000001"),
            RowResult("k2", "failed", errors=[{"column": "user_id", "code": "X", "message": "m"}]),
        ], "r1")
        assert ledger.open_operations() == []
        paid = ledger.known_rows(["k1"])[["row_key", "status", "paid_run_id", "bonus_id"]]
        assert paid.to_dict("records") == [{"row_key": "k1", "status": "paid", "paid_run_id": "r1",
                                            "bonus_id": "100000000001"}]
        assert ledger.known_rows(["k2"])["status"].tolist() == ["failed"]


def test_paid_rows_are_never_replanned_but_failed_rows_are(location: str | Path) -> None:
    with Ledger(location) as ledger:
        ledger.record_intent("r1", "b", planned_frame(["k1", "k2"]), [b"{}", b"{}"])
        ledger.record_outcome("op-1", {"status": "SUCCESS"}, [
            RowResult("k1", "paid", bonus_id="1"), RowResult("k2", "failed", errors=[])], "r1")
        ledger.record_intent("r2", "b", planned_frame(["k1", "k2"], op_id="op-2", attempt=2), [b"{}", b"{}"])
        known = ledger.known_rows(["k1", "k2"]).set_index("row_key")
        assert known.loc["k1", "status"] == "paid" and known.loc["k1", "operation_id"] == "op-1"
        assert known.loc["k2", "status"] == "planned" and known.loc["k2", "operation_id"] == "op-2"
        assert known.loc["k2", "attempt"] == 2


def test_a_late_outcome_never_overwrites_a_paid_row(location: str | Path) -> None:
    with Ledger(location) as ledger:
        ledger.record_intent("r1", "b", planned_frame(["k1"]), [b"{}"])
        ledger.record_outcome("op-1", {"status": "SUCCESS"}, [RowResult("k1", "paid", bonus_id="1")], "r1")
        ledger.record_outcome("op-1", {"status": "FAIL"}, [RowResult("k1", "failed", errors=[])], "r1")
        assert ledger.known_rows(["k1"])["status"].tolist() == ["paid"]


def test_second_writer_is_refused_even_from_another_process(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    code = ("import sys; from pipeline.ledger import Ledger\n"
            "from pipeline.errors import LedgerLocked\n"
            f"try:\n  Ledger({str(path)!r}).__enter__()\nexcept LedgerLocked: sys.exit(4)\n")
    with Ledger(path):
        with pytest.raises(LedgerLocked):
            Ledger(path).__enter__()
        assert subprocess.run([sys.executable, "-c", code]).returncode == 4
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
