"""CSV sheets as finance sends them: encodings, delimiters, spreadsheet row numbers, title rows, limits, huge cells;
and Parquet sheets with columns that have no text form. Real files, read by `ingest.read_sheets`."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sheet_factory import uid

from pipeline.contract import SheetLimits, SheetOptions
from pipeline.errors import SheetError
from pipeline.ingest import read_sheets
from pipeline.ingest_csv import _scan


def read(path: Path, **options: object) -> tuple[list[tuple[int, str | None, str | None, str | None]], list[str]]:
    """(source_row, user_id, amount, private_comment) of each row, and the notices."""
    notices: list[str] = []
    frame = read_sheets([path], SheetOptions(**options), notices)  # type: ignore[arg-type]
    return list(zip(frame["source_row"], frame["user_id"], frame["amount"], frame["private_comment"])), notices


def write(tmp_path: Path, data: bytes, name: str = "s.csv") -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


U1, U2 = uid(1), uid(2)


# --- encodings ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding, text, named", [
    ("cp1251", "Премия за неделю 48", "cp1251 (Russian)"),
    ("cp1252", "Prime de qualité – 5 €", "cp1252 (Western European)"),
    ("cp1252", "Größe", "cp1252"),
])
def test_single_byte_encodings_are_detected_and_reported(tmp_path, encoding, text, named):
    p = write(tmp_path, f"user_id,amount,private_comment\n{U1},1.50,{text}\n".encode(encoding))
    rows, notices = read(p)
    assert rows == [(2, U1, "1.50", text)]
    assert any(named in n and "detected" in n for n in notices)


def test_non_utf8_bytes_after_a_valid_utf8_first_megabyte_are_detected(tmp_path):
    body = f"{U1},1.50,plain\n" * 30_000  # > 1 MB of ASCII before the first cp1251 byte
    p = write(tmp_path, f"user_id,amount,private_comment\n{body}{U2},2.00,Итого за неделю\n".encode("cp1251"))
    rows, notices = read(p)
    assert rows[-1] == (30_002, U2, "2.00", "Итого за неделю")
    assert any("cp1251" in n for n in notices)


def test_an_unclear_encoding_is_refused_naming_the_candidates_and_the_flag(tmp_path):
    p = write(tmp_path, f"user_id,amount,private_comment\n{U1},1.50,Bonus № 5\n".encode("cp1251"))
    with pytest.raises(SheetError) as info:
        read(p)
    assert "(cp1251 or cp1252?)" in str(info.value)
    assert "--encoding cp1251 (Russian) or --encoding cp1252 (Western European)" in str(info.value)
    assert read(p, encoding="cp1251")[0] == [(2, U1, "1.50", "Bonus № 5")]
    assert read(p, encoding="cp1252")[0] == [(2, U1, "1.50", "Bonus ¹ 5")]  # declared wins


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be", "utf-8"])
def test_byte_order_marks_decide(tmp_path, codec):
    text = f"user_id\tamount\tprivate_comment\r\n{U1}\t1.50\tПремия ✓\r\n\r\n{U2}\t2.00\tx\r\n"
    p = write(tmp_path, "\ufeff".encode(codec) + text.encode(codec), "s.txt")
    rows, notices = read(p)
    assert rows == [(2, U1, "1.50", "Премия ✓"), (4, U2, "2.00", "x")]
    assert any("tab" in n for n in notices)
    assert any(codec in n for n in notices) == (codec != "utf-8")


def test_a_byte_order_mark_wins_over_a_declared_single_byte_encoding(tmp_path):
    """A config's `encoding = "cp1251"` for a team, and one file saved as Excel's "CSV UTF-8"."""
    p = write(tmp_path, "\ufeffuser_id,amount,private_comment\nabc,1,Премия\n".encode("utf-8"))
    rows, notices = read(p, encoding="cp1251")
    assert rows == [(2, "abc", "1", "Премия")]
    assert notices == ["s.csv: text encoding utf-8, from its byte-order mark, not the declared cp1251"]


def test_cr_only_line_ends_are_refused_in_words(tmp_path):
    p = write(tmp_path, f"user_id,amount\r{U1},1\r\r{U2},2\r".encode())
    with pytest.raises(SheetError, match="CR only"):
        read(p)


def test_utf16_without_a_byte_order_mark_names_the_flag(tmp_path):
    p = write(tmp_path, f"user_id,amount\n{U1},1\n".encode("utf-16-le"))
    with pytest.raises(SheetError, match="--encoding utf-16-le"):
        read(p)
    assert read(p, encoding="utf-16-le")[0] == [(2, U1, "1", None)]


@pytest.mark.parametrize("data", [
    "user_id,amount\nJosé,1\n".encode("latin-1"),  # bad in the header's first megabyte
    ("user_id,amount\n" + f"{U1},1\n" * 40_000 + "Jos\xe9,2\n").encode("latin-1"),  # bad past it
])
def test_a_declared_encoding_that_does_not_fit_is_a_clear_error(tmp_path, data):
    p = write(tmp_path, data)
    with pytest.raises(SheetError) as info:
        read(p, encoding="utf-8")
    message = str(info.value)
    assert "--encoding" in message and "codec can't decode" not in message and "\n" not in message


def test_bytes_the_declared_single_byte_encoding_lacks_are_named_with_their_line(tmp_path):
    p = write(tmp_path, b"user_id,amount\nabc,1\nx\x98y,2\n")  # 0x98 is no cp1251 character
    with pytest.raises(SheetError, match=r"bytes 98 on line 3 are not cp1251 text"):
        read(p, encoding="cp1251")


# --- delimiters -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("delimiter, named", [(";", "semicolon"), ("\t", "tab"), ("|", "pipe")])
def test_delimiters_are_sniffed_from_the_header(tmp_path, delimiter, named):
    d = delimiter
    p = write(tmp_path, f'user_id{d}amount{d}private_comment\n{U1}{d}1.50{d}"a, b; c | d"\n'.encode())
    rows, notices = read(p)
    assert rows == [(2, U1, "1.50", "a, b; c | d")]
    assert any(named in n and "sniffed" in n for n in notices)


def test_a_semicolon_header_is_never_one_column(tmp_path):
    p = write(tmp_path, f"user_id;amount\n{U1};1,50\n{U2};2\n".encode())
    rows, _ = read(p)
    assert rows == [(2, U1, "1,50", None), (3, U2, "2", None)]


def test_known_column_names_settle_a_header_with_two_delimiters(tmp_path):
    p = write(tmp_path, f"user_id;amount;private_comment;notes, misc\n{U1};1;x;y\n".encode())
    assert read(p)[0] == [(2, U1, "1", "x")]


def test_an_unclear_delimiter_is_refused_naming_the_flag(tmp_path):
    p = write(tmp_path, "Исполнитель;Сумма, руб.\nabc;12,50\n".encode())
    with pytest.raises(SheetError, match="--delimiter ',' or --delimiter ';'"):
        read(p)
    with pytest.raises(SheetError, match=r"missing \(found: Исполнитель, Сумма, руб.\)"):  # declared: split on ;
        read(p, delimiter=";")


# --- row numbers ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_blank_lines_are_rows_and_a_multiline_cell_is_one(tmp_path, newline):
    lines = ["user_id,amount,private_comment", f'{U1},1,"two{newline}lines"', "", f"{U2},2,x", "", "", f"{U1},3,y"]
    p = write(tmp_path, newline.join(lines).encode())  # no line end after the last row
    assert [r[0] for r in read(p)[0]] == [2, 4, 7]


def test_stray_quotes_fall_back_to_the_csv_module(tmp_path):
    p = write(tmp_path, f'user_id,amount,private_comment\n{U1},1,5" screen\n\n{U2},2,x\n'.encode())
    assert read(p)[0] == [(2, U1, "1", '5" screen'), (4, U2, "2", "x")]


CELLS = st.text(st.sampled_from('ab,"\n;'), max_size=6)  # a bare CR is the csv module's fallback's case


@settings(max_examples=60, deadline=None)
@given(records=st.lists(st.lists(CELLS, min_size=1, max_size=3), max_size=8), chunk=st.integers(1, 9),
       newline=st.sampled_from(["\n", "\r\n"]))
def test_the_vectorised_scan_numbers_rows_like_the_csv_module(tmp_path_factory, records, chunk, newline):
    """Random quoted cells, blank records and line ends, read in tiny chunks so that quotes and line ends straddle
    them: `_scan` must give every non-blank record the row number Python's csv module counts for it."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator=newline).writerows(records)
    text = buf.getvalue()
    p = tmp_path_factory.mktemp("scan") / "s.csv"
    p.write_bytes(text.encode())
    expected = [i for i, rec in enumerate(csv.reader(io.StringIO(text, newline="")), start=2) if rec]
    rows, _ = _scan(p, 0, 2, SheetLimits(), "s.csv", chunk_size=chunk)
    assert rows.tolist() == expected


def test_a_row_with_more_cells_than_the_header_is_named(tmp_path):
    p = write(tmp_path, f'user_id,amount,private_comment\n{U1},1,"a\nb"\n\n{U2},2,x,y\n'.encode())
    with pytest.raises(SheetError, match=r"row 4 has 4 cells but the header \(row 1\) has 3"):
        read(p)


def test_rows_missing_trailing_empty_cells_are_padded_and_reported(tmp_path):
    """Some Excel versions leave out a row's trailing empty cells: those cells are empty, not a refused sheet."""
    p = write(tmp_path, f'user_id,amount,private_comment\n{U1},1,"a\nb"\n\n{U2},2\n{U1},3,c\n'.encode())
    rows, notices = read(p)
    assert rows == [(2, U1, "1", "a\nb"), (4, U2, "2", None), (5, U1, "3", "c")]
    assert notices == ["s.csv: row(s) 4 have fewer cells than the header: the missing cells are read as empty"]


# --- header rows ----------------------------------------------------------------------------------------------


TITLED = f"Bonuses week 48,,\nPrepared 2026-11-27,,\n,,\nuser_id,amount,private_comment\n{U1},1,x\n\n{U2},2,y\n"


def test_the_header_row_flag_skips_title_rows(tmp_path):
    rows, notices = read(write(tmp_path, TITLED.encode()), header_row=4)
    assert rows == [(5, U1, "1", "x"), (7, U2, "2", "y")]
    assert not notices


def test_a_header_below_title_rows_is_found_and_reported(tmp_path):
    rows, notices = read(write(tmp_path, TITLED.encode()))
    assert [r[0] for r in rows] == [5, 7]
    assert any("the header is row 4" in n for n in notices)


def test_a_header_row_past_the_end_is_refused(tmp_path):
    with pytest.raises(SheetError, match="--header-row 9 is past the sheet's last row"):
        read(write(tmp_path, TITLED.encode()), header_row=9)


# --- limits and huge cells ------------------------------------------------------------------------------------


def test_row_limit_counts_records_not_lines(tmp_path):
    p = write(tmp_path, f'user_id,amount,private_comment\n{U1},1,"a\nb\nc"\n{U2},2,x\n'.encode())
    assert len(read(p, limits=SheetLimits(max_rows=2))[0]) == 2  # 4 lines, 2 records
    with pytest.raises(SheetError, match=r"more than 1 rows.*--max-rows"):
        read(p, limits=SheetLimits(max_rows=1))


def test_column_limit_is_checked_on_the_header(tmp_path):
    p = write(tmp_path, f"user_id,amount,a,b\n{U1},1,,\n".encode())
    with pytest.raises(SheetError, match=r"4 columns, over the limit of 3 \(raise it with --max-columns"):
        read(p, limits=SheetLimits(max_columns=3))


@pytest.mark.parametrize("quoted", [False, True])
def test_a_10_mb_cell_does_not_fail_the_sheet(tmp_path, quoted):
    big = "x" * (10 << 20)
    cell = f'"{big[:5 << 20]}\n{big[5 << 20:]}"' if quoted else big
    p = write(tmp_path, f"user_id,amount,notes,private_comment\n{U1},1,{cell},a\n{U2},2,,{cell}\n".encode())
    rows, _ = read(p)
    assert [(r[0], r[1]) for r in rows] == [(2, U1), (3, U2)]
    assert len(rows[1][3]) == len(big) + quoted  # kept whole: validation reports its length


# --- Parquet --------------------------------------------------------------------------------------------------


def test_parquet_nested_columns_we_do_not_use_are_left_out_with_a_notice(tmp_path):
    p = tmp_path / "s.parquet"
    pq.write_table(pa.table({"user_id": [U1], "amount": ["1.50"], "meta": pa.array([{"a": 1}]),
                             "tags": pa.array([["x"]]),
                             "attrs": pa.array([[("k", "v")]], pa.map_(pa.string(), pa.string()))}), p)
    rows, notices = read(p)
    assert rows == [(2, U1, "1.50", None)]
    assert [n.split("'")[1] for n in notices] == ["meta", "tags", "attrs"]


@pytest.mark.parametrize("column", ["amount", "Private Comment", "public_title_en"])
def test_a_needed_nested_parquet_column_is_refused_by_name(tmp_path, column):
    p = tmp_path / "s.parquet"
    data = {"user_id": [U1], "amount": ["1"]}
    data[column] = pa.array([[1, 2]])
    pq.write_table(pa.table(data), p)
    with pytest.raises(SheetError, match=f"column {column!r} holds list"):
        read(p)


def test_parquet_limits_come_from_its_metadata(tmp_path):
    p = tmp_path / "s.parquet"
    pq.write_table(pa.table({"user_id": [U1, U2], "amount": np.array([1, 2])}), p)
    with pytest.raises(SheetError, match="--max-rows"):
        read(p, limits=SheetLimits(max_rows=1))
    with pytest.raises(SheetError, match="--max-columns"):
        read(p, limits=SheetLimits(max_columns=1))
