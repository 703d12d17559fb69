"""The .xlsx reader on real files: cell texts as the spreadsheet shows them, sheet and header choice, row
numbers, formulas without a cached value, hidden rows, and the limits checked before the bulk is read (the
XFD1048576 bomb in a child process, its peak memory measured)."""

from __future__ import annotations

import datetime as dt
import random
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from pipeline.contract import SheetLimits, SheetOptions, column_letters
from pipeline.errors import SheetError
from pipeline.ingest import read_sheets
from pipeline.ingest_xlsx import _extent, _extent_exact

sys.path.insert(0, str(Path(__file__).resolve().parent / "corpus"))

from case import MESSAGE, TITLE, uid  # noqa: E402
from cases_xlsx import HEADER, _bomb, _raw_xlsx, _sheet_xml, _xlsxwriter  # noqa: E402


def _read(path: Path, **options: object) -> tuple[list[dict[str, object]], list[str]]:
    notices: list[str] = []
    frame = read_sheets([path], SheetOptions(**options), notices)  # type: ignore[arg-type]
    return frame.to_dict("records"), notices


def test_cells_read_as_the_spreadsheet_shows_them_and_only_amounts_are_rounded_to_cents(tmp_path: Path) -> None:
    p = tmp_path / "texts.xlsx"
    head = ["User ID", "Amount", "Private Comment", "assignment_id", "without_message"]
    _xlsxwriter(p, {"S": [head,
                          [12345, 0.1 + 0.2, 12345.5, 987654321, True],
                          ["a", 0.123, dt.date(2026, 11, 30), "0012", False],
                          ["b", 12.0, 2.5, None, None],
                          ["c", -1.5, "", 1.5, None]]})
    rows, _ = _read(p)
    got = [(r["user_id"], r["amount"], r["private_comment"], r["assignment_id"], r["without_message"]) for r in rows]
    assert got == [("12345", "0.30", "12345.5", "987654321", "true"),
                   ("a", "0.123", "2026-11-30", "0012", "false"),
                   ("b", "12", "2.5", None, None),
                   ("c", "-1.50", None, "1.5", None)]
    assert [r["source_row"] for r in rows] == [2, 3, 4, 5]


def test_title_rows_blank_rows_and_hidden_rows_keep_the_spreadsheets_row_numbers(tmp_path: Path) -> None:
    p = tmp_path / "titled.xlsx"
    _xlsxwriter(p, {"Bonuses": [["Bonuses week 48"], [], HEADER, [uid(1), 1.5], [], [uid(2), 2], [uid(3), 3]]},
                hide_rows=(6, 7), hide_cols=(2,))
    rows, notices = _read(p)
    assert [(r["source_row"], r["user_id"]) for r in rows] == [(4, uid(1)), (6, uid(2)), (7, uid(3))]
    assert notices == [f"{p.name}: header found on row 3",
                       f"{p.name}: 2 hidden rows (6, 7) and 1 hidden column (B) were read and are in the report"]


def test_header_row_option_and_a_missing_header_name_the_flag(tmp_path: Path) -> None:
    p = tmp_path / "legend.xlsx"
    _xlsxwriter(p, {"S": [["legend", "user_id", "amount"], HEADER, [uid(1), 1.5]]})
    rows, _ = _read(p)  # the legend row holds both names: it is taken for the header, the real one for data
    assert (rows[0]["source_row"], rows[0]["user_id"]) == (2, "amount")  # the user_id column is B there
    rows, notices = _read(p, header_row=2)
    assert [(r["source_row"], r["amount"]) for r in rows] == [(3, "1.50")]
    assert notices == [f"{p.name}: header read from row 2 (--header-row)"]
    with pytest.raises(SheetError, match=r"--header-row 9 is outside the sheet \(its rows are 1 to 3\)"):
        _read(p, header_row=9)
    q = tmp_path / "noheader.xlsx"
    _xlsxwriter(q, {"S": [["Bonuses"], ["ID", "Sum"], ["x", 1]]})
    with pytest.raises(SheetError, match=r"required column\(s\) user_id, amount missing .* --header-row N"):
        _read(q)


def test_sheets_are_all_looked_at(tmp_path: Path) -> None:
    p = tmp_path / "book.xlsx"
    _xlsxwriter(p, {"Empty": [], "Week 48": [HEADER, [uid(1), 1]], "Week 49": [HEADER, [uid(2), 2]]})
    with pytest.raises(SheetError, match=r"2 sheets hold data \('Week 48', 'Week 49'\): .* --sheet NAME"):
        _read(p)
    rows, notices = _read(p, sheet="week 49")  # sheet names compare as Excel does, case-insensitively
    assert [r["user_id"] for r in rows] == [uid(2)] and notices == []
    with pytest.raises(SheetError, match=r"no sheet named 'Week 50' \(its sheets: 'Empty', 'Week 48', 'Week 49'\)"):
        _read(p, sheet="Week 50")
    q = tmp_path / "one.xlsx"
    _xlsxwriter(q, {"Empty": [], "Data": [HEADER, [uid(1), 1]]})
    rows, notices = _read(q)
    assert notices == [f"{q.name}: read sheet 'Data', the only one with data ('Empty' is empty)"]


def test_formulas_without_a_cached_value_read_as_their_formula_and_errors_as_shown(tmp_path: Path) -> None:
    p = tmp_path / "formulas.xlsx"
    rows = {1: HEADER, 2: [uid(1), "<f>0.1+0.2</f><v>0.30000000000000004</v>"],
            3: [uid(2), '<f t="shared" ref="B3:B4" si="0">SUM(B$2:B2)&amp;""</f>'],
            4: [uid(3), '<f t="shared" si="0"/>']}
    error_cell = (f'<row r="5"><c r="A5" t="inlineStr"><is><t>{uid(4)}</t></is></c>'
                  '<c r="B5" t="e"><f>1/0</f><v>#DIV/0!</v></c></row>')
    xml = _sheet_xml(rows, "A1:B5", extra_rows=error_cell)
    _raw_xlsx(p, {"S": xml})
    got, _ = _read(p)
    assert [r["amount"] for r in got] == ["0.30", '=SUM(B$2:B2)&""', '=SUM(B$2:B2)&""', "#DIV/0!"]


def test_libreoffice_inline_strings_and_namespace_prefixed_xml(tmp_path: Path) -> None:
    p = tmp_path / "prefixed.xlsx"
    xml = _sheet_xml({1: HEADER, 2: [uid(1), 1.5, "c", TITLE, MESSAGE]}, "A1:E2")
    xml = re.sub(r"<(/?)(worksheet|dimension|sheetData|row|c|is|t|v)\b", r"<\1x:\2", xml)
    xml = xml.replace('xmlns="http', 'xmlns:x="http')
    _raw_xlsx(p, {"S": xml})
    rows, _ = _read(p)
    assert (rows[0]["user_id"], rows[0]["amount"], rows[0]["private_comment"]) == (uid(1), "1.50", "c")


@pytest.mark.parametrize("limits, flag", [
    ({"max_xlsx_cells": 9}, "--max-xlsx-cells"),
    ({"max_rows": 2}, "--max-rows"),
    ({"max_columns": 4}, "--max-columns"),
    ({"max_xlsx_unzipped_mb": 0.001}, "--max-xlsx-unzipped-mb"),
])
@pytest.mark.parametrize("dimension", ["A1:E4", "A1:A1", None])
def test_each_limit_is_one_line_naming_its_flag_whatever_the_dimension_says(
        tmp_path: Path, limits: dict[str, float], flag: str, dimension: str | None) -> None:
    p = tmp_path / "limits.xlsx"
    _raw_xlsx(p, {"S": _sheet_xml({1: HEADER, 2: [uid(1), 1], 3: [uid(2), 2], 4: [uid(3), 3]}, dimension)})
    with pytest.raises(SheetError) as info:
        _read(p, limits=SheetLimits(**limits))  # type: ignore[arg-type]
    assert flag in str(info.value) and "\n" not in str(info.value)
    assert _read(p)[0][2]["source_row"] == 4  # within the default limits it reads


def test_a_zip_entry_claiming_an_absurd_ratio_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "ratio.xlsx"
    _raw_xlsx(p, {"S": _sheet_xml({1: HEADER, 2: [uid(1), 1]}, "A1:B2") + " " * (20 << 20)})
    with pytest.raises(SheetError, match=r"claims 20 MB from .* bytes \(over 1000:1\)"):
        _read(p)


def test_the_xfd1048576_bomb_is_refused_in_a_child_with_bounded_memory(tmp_path: Path) -> None:
    """A few KB naming the last cell Excel has: 17 billion cells for a reader that fills its range (openpyxl via
    pandas grew to 5.5 GB). Refused from the dimension, or while streaming when the dimension lies."""
    for dimension in ("A1:XFD1048576", "A1:E2", None):
        p = tmp_path / f"bomb-{dimension}.xlsx"
        _bomb(p, dimension)
        assert p.stat().st_size < 5000
        # the child's own peak (VmHWM): getrusage's ru_maxrss would carry over the pytest parent's peak across
        # fork and exec, which grows with the suite
        code = ("import re, sys\nfrom pathlib import Path\nfrom pipeline.ingest import read_sheets\n"
                "from pipeline.errors import SheetError\n"
                "try:\n    read_sheets([sys.argv[1]])\nexcept SheetError as e:\n    print(e)\n"
                "print(int(re.search(r'VmHWM:\\s+(\\d+) kB', Path('/proc/self/status').read_text()).group(1)) // 1024)\n")
        out = subprocess.run([sys.executable, "-c", code, str(p)], capture_output=True, text=True, timeout=120)
        said, peak_mib = out.stdout.strip().rsplit("\n", 1)
        assert "17,179,869,184 cells, over the limit of 50,000,000" in said and "--max-xlsx-cells" in said, out
        assert int(peak_mib) < 500, f"peak RSS {peak_mib} MiB"


def test_the_extent_from_a_few_scans_equals_the_one_from_every_cell_reference() -> None:
    rng = random.Random(9)
    for _ in range(300):
        rows = sorted(rng.sample(range(1, rng.choice([20, 2000, 2_000_000])), rng.randint(1, 12)))
        parts = []
        for r in rows:
            cols = sorted(rng.sample(range(1, rng.choice([6, 30, 800, 16384])), rng.randint(1, 5)))
            cell_row = r if rng.random() < 0.9 else rng.randint(1, 3_000_000)  # a lying reference now and then
            parts.append(f'<row r="{r}">' + "".join(f'<c r="{column_letters(c)}{cell_row}"><v>1</v></c>' for c in cols)
                         + "</row>")
        seg = "".join(parts).encode()
        assert _extent(seg) == _extent_exact(seg), seg[:300]


def test_a_sheet_made_by_openpyxl_with_the_bomb_cell_is_refused(tmp_path: Path) -> None:
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.append(HEADER)
    ws["XFD1048576"] = "x"
    p = tmp_path / "bomb.xlsx"
    wb.save(p)
    with zipfile.ZipFile(p) as z:
        assert b"XFD1048576" in z.read("xl/worksheets/sheet1.xml")
    with pytest.raises(SheetError, match="--max-xlsx-cells"):
        _read(p)


def test_a_hidden_sheet_with_data_counts_and_is_named_hidden(tmp_path: Path) -> None:
    import xlsxwriter

    p = tmp_path / "hidden_sheet.xlsx"
    wb = xlsxwriter.Workbook(str(p))
    for name in ("Pay", "Old"):
        ws = wb.add_worksheet(name)
        ws.write_row(0, 0, HEADER)
        ws.write_row(1, 0, [uid(1), 1])
        if name == "Old":
            ws.hide()
    wb.close()
    with pytest.raises(SheetError, match=r"2 sheets hold data \('Pay', 'Old'; hidden: 'Old'\)"):
        _read(p)
    assert _read(p, sheet="Pay")[0][0]["user_id"] == uid(1)
