"""`payout report RUN_ID`: exports opened the way people open them — the CSV with the csv module, the .xlsx with
openpyxl (and its XML read directly) — checking that no text can become a formula and that amounts stay exact."""

from __future__ import annotations

import csv
import json
import re
import zipfile
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openpyxl import load_workbook
from sandbox_fixtures import TOKEN

from pipeline import export
from pipeline.cli import main
from pipeline.report import write_report

SHEETS = Path(__file__).resolve().parent / "corpus" / "sheets"
DANGER = ("=", "+", "-", "@", "\t", "\r")
HYPERLINK = '=HYPERLINK("http://evil.example","x")'


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def ooxml_text(value: object) -> object:
    """A string cell as Excel shows it: OOXML writes control characters (CR) as `_x000D_` and a literal `_xHHHH_`
    as `_x005F_xHHHH_`; Excel decodes both, openpyxl leaves them as stored."""
    if not isinstance(value, str):
        return value
    return re.sub(r"_x([0-9A-Fa-f]{4})_", lambda m: chr(int(m[1], 16)), value)


def read_xlsx(path: Path) -> tuple[list[str], list[dict[str, object]]]:
    """The Rows sheet as dicts (texts as Excel shows them), after checking that no cell of any sheet is a
    formula."""
    book = load_workbook(path)
    for sheet in book.worksheets:
        for cells in sheet.iter_rows():
            for cell in cells:
                assert cell.data_type != "f", f"{sheet.title}!{cell.coordinate} is a formula: {cell.value!r}"
    with zipfile.ZipFile(path) as z:  # and the XML itself holds no formula element
        for name in z.namelist():
            if name.startswith("xl/worksheets/"):
                assert b"<f>" not in z.read(name) and b"<f " not in z.read(name), name
    rows = list(book["Rows"].iter_rows(values_only=True))
    header = [str(h) for h in rows[0]]
    return header, [dict(zip(header, map(ooxml_text, r))) for r in rows[1:]]


@pytest.fixture
def formula_run(sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """guard_formula_cells.csv paid against the sandbox, under a file name that itself starts with '='."""
    monkeypatch.setenv("TOLOKA_TOKEN", TOKEN)
    monkeypatch.chdir(tmp_path)
    Path("=cmd.csv").write_bytes((SHEETS / "guard_formula_cells.csv").read_bytes())
    out = tmp_path / "reports"
    assert main(["run", "=cmd.csv", "--api-url", sandbox.url, "--batch-id", "export", "--ledger",
                 str(tmp_path / "ledger.sqlite"), "--out", str(out)]) == 1
    [run_dir] = [p.parent for p in out.glob("*/rows.parquet")]
    return out, run_dir.name


def export_cli(out: Path, run_id: str, fmt: str, capsys: pytest.CaptureFixture[str], *extra: str) -> Path:
    capsys.readouterr()
    assert main(["report", run_id, "--format", fmt, "--out", str(out), *extra]) == 0
    printed = capsys.readouterr().out.strip()
    assert Path(printed).is_file()
    return Path(printed)


def test_csv_export_neutralises_formula_texts_and_keeps_amounts_exact(formula_run, capsys) -> None:
    out, run_id = formula_run
    path = export_cli(out, run_id, "csv", capsys)
    assert path == out / run_id / "rows.csv"
    rows = read_csv(path)
    assert [r["source_row"] for r in rows] == ["2", "3", "4", "5", "6"]
    assert [r["status"] for r in rows] == ["paid", "invalid", "invalid", "invalid", "invalid"]
    assert all(r["source_file"] == "'=cmd.csv" for r in rows)
    assert rows[1]["user_id"] == "'" + HYPERLINK  # the text intact behind one quote
    assert rows[0]["amount"] == "1.00" and rows[1]["amount"] == "2.00" and rows[2]["amount"] == ""
    assert rows[2]["reason"] == "amount: amount '=1+1': formula not calculated: open and save the file in Excel"
    assert rows[0]["bonus_id"] and rows[0]["reason"] == ""
    for r in rows:
        for name, value in r.items():
            assert not value.startswith(DANGER), f"{name}: {value!r}"


def test_xlsx_export_has_no_formula_and_exact_number_amounts(formula_run, capsys) -> None:
    out, run_id = formula_run
    header, rows = read_xlsx(export_cli(out, run_id, "xlsx", capsys))
    assert header[:6] == ["source_file", "source_row", "user_id", "amount", "status", "reason"]
    assert rows[1]["user_id"] == "'" + HYPERLINK and rows[0]["source_file"] == "'=cmd.csv"
    assert [r["source_row"] for r in rows] == [2, 3, 4, 5, 6]
    assert [Decimal(str(r["amount"])) if r["amount"] is not None else None for r in rows] == [
        Decimal("1.00"), Decimal("2.00"), None, None, None]
    for r in rows:
        for name, value in r.items():
            assert not (isinstance(value, str) and value.startswith(DANGER)), f"{name}: {value!r}"
    book = load_workbook(out / run_id / "rows.xlsx")
    assert book["Rows"]["D2"].number_format == "0.00"
    summary = {r[0]: r[1:] for r in book["Summary"].iter_rows(values_only=True) if r[0]}
    assert summary["run_id"][0] == run_id and summary["paid"][:2] == (1, 1)


def test_json_export_keeps_every_text_exact(formula_run, capsys) -> None:
    out, run_id = formula_run
    doc = json.loads(export_cli(out, run_id, "json", capsys).read_text(encoding="utf-8"))
    assert doc["summary"]["run_id"] == run_id and doc["summary"]["counts"]["invalid"] == 4
    rows = doc["rows"]
    assert rows[1]["user_id"] == HYPERLINK and rows[0]["source_file"] == "=cmd.csv"
    assert rows[0]["amount"] == "1.00" and rows[2]["amount"] is None
    assert rows[3]["errors"][0]["column"] == "amount" and "@SUM(1)" in rows[3]["reason"]


def test_output_flag_and_unknown_or_unsafe_run_ids(formula_run, capsys, tmp_path: Path) -> None:
    out, run_id = formula_run
    target = tmp_path / "for-finance.csv"
    assert export_cli(out, run_id, "csv", capsys, "--output", str(target)) == target
    for bad in ("20991231T000000Z-none", "../reports", "."):
        assert main(["report", bad, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"no report for run {bad!r}" in err and f"recent runs: {run_id}" in err and "Traceback" not in err
    assert main(["report", run_id, "--out", str(tmp_path / "empty")]) == 2
    assert "holds no reports yet" in capsys.readouterr().err


def report_of(folder: Path, texts: list[str], cents: list[int | None]) -> tuple[Path, str]:
    """A report written by the report stage itself, rows carrying `texts` in every text column."""
    n = len(texts)
    rows = pd.DataFrame({
        "run_id": "r1", "source_file": texts, "source_row": range(2, n + 2), "row_key": texts, "user_id": texts,
        "amount_cents": pd.array(cents, dtype="Int64"), "status": "invalid",
        "errors": [[{"column": "user_id", "code": "x", "message": t}] for t in texts], "operation_id": texts,
        "bonus_id": texts, "note": texts})
    write_report(folder, "r1", rows, pd.DataFrame(), {"batch_id": "b"})
    return folder, "r1"


@pytest.mark.parametrize("start", DANGER)
def test_each_dangerous_start_is_neutralised_in_csv_and_xlsx(start: str, tmp_path: Path) -> None:
    text = f"{start}cmd|' /C calc'!A0"
    out, run_id = report_of(tmp_path, [text, "plain", "'quoted"], [1250, 7, None])
    rows = read_csv(export.export_run(out, run_id, "csv"))
    assert [r["user_id"] for r in rows] == ["'" + text, "plain", "'quoted"]
    assert [r["amount"] for r in rows] == ["12.50", "0.07", ""]
    _, xrows = read_xlsx(export.export_run(out, run_id, "xlsx"))
    assert [r["bonus_id"] for r in xrows] == ["'" + text, "plain", "'quoted"]
    assert [r["amount"] for r in xrows] == [12.5, 0.07, None]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(st.text(st.characters(blacklist_categories=("Cs",)), max_size=30), min_size=1, max_size=5),
       cents=st.lists(st.integers(0, 99_999_999_99), min_size=5, max_size=5))
def test_any_text_and_amount_round_trips_through_csv_and_xlsx(texts: list[str], cents: list[int],
                                                              tmp_path_factory: pytest.TempPathFactory) -> None:
    out, run_id = report_of(tmp_path_factory.mktemp("r"), texts, cents[:len(texts)])
    rows = read_csv(export.export_run(out, run_id, "csv"))
    assert [r["user_id"] for r in rows] == [export.neutralise(t) for t in texts]
    assert [r["reason"] for r in rows] == [f"user_id: {t}; {t}" if t else "user_id: x" for t in texts]
    assert [Decimal(r["amount"]) * 100 for r in rows] == cents[:len(texts)]
    _, xrows = read_xlsx(export.export_run(out, run_id, "xlsx"))
    assert [round(Decimal(str(r["amount"])) * 100) for r in xrows] == cents[:len(texts)]
    assert all(not (isinstance(v, str) and v.startswith(DANGER)) for r in xrows for v in r.values())


def test_a_report_larger_than_an_excel_sheet_is_refused_with_the_way_out(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    out, run_id = report_of(tmp_path, ["a", "b", "c"], [1, 2, 3])
    monkeypatch.setattr(export, "XLSX_MAX_ROWS", 3)  # Excel's 1,048,576, scaled down
    with pytest.raises(export.UsageError, match="more than an Excel sheet holds .* use --format csv"):
        export.export_run(out, run_id, "xlsx")


def test_report_reads_files_only_no_token_no_network(formula_run, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    """`payout report` for a production run needs no token: it reads the report folder and nothing else."""
    out, run_id = formula_run
    monkeypatch.delenv("TOLOKA_TOKEN")
    monkeypatch.delenv("TOLOKA_TOKEN_FILE", raising=False)
    path = export_cli(out, run_id, "csv", capsys, "--env", "production")
    assert read_csv(path)[1]["user_id"] == "'" + HYPERLINK
