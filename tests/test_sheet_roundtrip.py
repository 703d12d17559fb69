"""Any sheet finance could send round-trips every row exactly once into `rows.parquet`, with the row number a
spreadsheet shows.

Hypothesis generates finance-like rows (valid and invalid user ids and amounts, JSON and junk texts, duplicates,
multi-line quoted cells, cells holding delimiters and quotes), writes them as CSV in a random encoding (UTF-8 with
or without BOM, UTF-16 with BOM, cp1251, cp1252), delimiter (, ; tab |) and line end, with blank lines and title
rows above the header in between; or as Parquet; or as an .xlsx sheet with blank and title rows. Then it runs
`payout run --dry-run` in-process on it.

The expected row numbers do not come from the code under test: the writer counts them as it writes, the way a
spreadsheet shows the file. It writes the title rows first (rows 1..t, header at t+1 given as --header-row when
t > 0), then for each record: any blank lines it emits first (one row each), then the record, which is one row
however many line ends its quoted cells hold; the .xlsx writer places each record at the row it counts. For
Parquet the rows are simply 2, 3, ... Each expected row carries the user id written into it, so a row numbered
right but filled from another record fails too.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.cli import main

COLUMNS = ["user_id", "amount", "private_comment", "public_title", "public_message"]
# Characters each encoding can write (cells are drawn from these); the delimiters and quotes are always in.
ASCII = "ab Z09,;|\t\"'.-{}:"
EXTRA = {"utf-8": "é€Жж✓\n", "utf-8-sig": "é€Жж✓\n", "utf-16": "é€Жж✓\n", "cp1251": "Жжё№\n", "cp1252": "é€ü\n"}


@dataclass(frozen=True)
class Sheet:
    rows: list[list[str]]  # data records, in order
    blanks: list[int]  # blank lines written before each record
    titles: int  # title rows above the header
    encoding: str
    delimiter: str
    newline: str


def uid(n: int) -> str:
    return f"{n:032x}"


def cells(encoding: str) -> st.SearchStrategy[str]:
    return st.text(st.sampled_from(ASCII + EXTRA[encoding]), max_size=8)


@st.composite
def sheets(draw: st.DrawFn) -> Sheet:
    encoding = draw(st.sampled_from(sorted(EXTRA)))
    text = cells(encoding)
    user = st.one_of(st.integers(1, 5).map(uid), st.sampled_from(["x", "NA", uid(1).upper(), "001"]))
    amount = st.sampled_from(["1.50", "2", "0.01", "100", "abc", "0", "1.505", "", "-1", "$3.00"])
    title = st.one_of(st.just('{"EN": "Thanks"}'), text.map(lambda t: json.dumps({"EN": t or "x"}, ensure_ascii=False)),
                      text)
    record = st.tuples(user, amount, text, title, title).map(list)
    rows: list[list[str]] = draw(st.lists(record, min_size=1, max_size=8))
    if draw(st.booleans()):  # an exact duplicate of an earlier record
        rows.append(list(rows[draw(st.integers(0, len(rows) - 1))]))
    return Sheet(rows=rows, blanks=draw(st.lists(st.sampled_from([0, 0, 0, 1, 2]), min_size=len(rows),
                                                 max_size=len(rows))),
                 titles=draw(st.sampled_from([0, 0, 0, 1, 2])), encoding=encoding,
                 delimiter=draw(st.sampled_from([",", ";", "\t", "|"])), newline=draw(st.sampled_from(["\n", "\r\n"])))


def write_csv(sheet: Sheet, path: Path) -> dict[int, str]:
    """Writes the sheet; returns {spreadsheet row: user id written into it}, counted while writing."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=sheet.delimiter, lineterminator=sheet.newline)
    row = 0
    for t in range(sheet.titles):
        writer.writerow([f"Bonuses week {48 + t}"] + [""] * (len(COLUMNS) - 1))
        row += 1
    writer.writerow(COLUMNS)
    row += 1
    expected: dict[int, str] = {}
    for record, blank in zip(sheet.rows, sheet.blanks):
        out.write(sheet.newline * blank)
        row += blank + 1
        writer.writerow(record)
        expected[row] = record[0]
    path.write_bytes(out.getvalue().encode(sheet.encoding))
    return expected


def write_parquet(sheet: Sheet, path: Path) -> dict[int, str]:
    pq.write_table(pa.table({c: [r[i] for r in sheet.rows] for i, c in enumerate(COLUMNS)}), path)
    return {i: r[0] for i, r in enumerate(sheet.rows, start=2)}


def run_dry(sheet_path: Path, work: Path, *flags: str) -> pa.Table:
    out = work / "out"
    code = main(["run", str(sheet_path), "--dry-run", "--data-dir", str(work / "data"), "--out", str(out), *flags])
    assert code in (0, 1), f"payout run exited {code}"
    [rows] = list(out.glob("*/rows.parquet"))
    return pq.read_table(rows, columns=["source_row", "user_id", "status"])


def check(table: pa.Table, expected: dict[int, str]) -> None:
    got = table.column("source_row").to_pylist()
    assert sorted(got) == sorted(expected), f"rows {sorted(got)}, expected {sorted(expected)}"
    assert len(set(got)) == len(got), "a row is reported twice"
    for row, user in zip(got, table.column("user_id").to_pylist()):
        assert user == expected[row].strip(), f"row {row} holds {user!r}, the sheet wrote {expected[row]!r} there"
    # a fresh data folder and a dry run: every row is planned, or refused with its reason
    assert set(table.column("status").to_pylist()) <= {"planned", "invalid", "duplicate"}


def round_trip(tmp_path_factory, sheet: Sheet, name: str, write: Callable[[Sheet, Path], dict[int, str]],
               *flags: str) -> None:
    """Write the sheet as `name`, run it, and check every row came back once at the row the writer counted."""
    work = tmp_path_factory.mktemp("roundtrip")
    path = work / name
    expected = write(sheet, path)
    check(run_dry(path, work, *flags), expected)


SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                              HealthCheck.too_slow])


@SETTINGS
@given(sheet=sheets())
def test_every_csv_row_round_trips_once_with_its_spreadsheet_row(tmp_path_factory, sheet: Sheet) -> None:
    flags = ["--header-row", str(sheet.titles + 1)] if sheet.titles else []
    if sheet.encoding.startswith("cp"):  # a few short cells cannot tell cp1251 from cp1252 (refused): declare it
        flags += ["--encoding", sheet.encoding]
    round_trip(tmp_path_factory, sheet, "sheet.csv", write_csv, *flags)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sheet=sheets())
def test_every_parquet_row_round_trips_once(tmp_path_factory, sheet: Sheet) -> None:
    round_trip(tmp_path_factory, sheet, "sheet.parquet", write_parquet)


def write_xlsx(sheet: Sheet, path: Path) -> dict[int, str]:
    """The same records in an .xlsx sheet (cells placed at the rows a spreadsheet shows: title rows, then the
    header, then each record after its blank rows); amounts that are numbers are written as number cells."""
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    row = 0
    for t in range(sheet.titles):
        row += 1
        ws.cell(row=row, column=1, value=f"Bonuses week {48 + t}")
    row += 1
    for c, name in enumerate(COLUMNS, start=1):
        ws.cell(row=row, column=c, value=name)
    expected: dict[int, str] = {}
    for record, blank in zip(sheet.rows, sheet.blanks):
        row += blank + 1
        for c, value in enumerate(record, start=1):
            number = c == 2 and value.replace(".", "", 1).isdigit()
            ws.cell(row=row, column=c, value=float(value) if number else (value or None))
        expected[row] = record[0]
    wb.save(path)
    return expected


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sheet=sheets())
def test_every_xlsx_row_round_trips_once_with_its_spreadsheet_row(tmp_path_factory, sheet: Sheet) -> None:
    round_trip(tmp_path_factory, sheet, "sheet.xlsx", write_xlsx)  # title rows: the header is found below them
