"""CSV and Parquet sheets the way finance really sends them: encodings (UTF-8 with and without BOM, Excel's
"Unicode text" UTF-16, cp1251, cp1252), delimiters, blank lines and multi-line cells (rows numbered as
LibreOffice shows them), title rows above the header, limits, huge cells, nested Parquet columns."""

from __future__ import annotations

from pathlib import Path

from case import MESSAGE, TITLE, Case, uid

HEADER = ["user_id", "amount", "private_comment", "public_title", "public_message"]


def _excel_cell(value: str, delimiter: str) -> str:
    """A cell as Excel writes it: quoted (quotes doubled) only when it holds the delimiter, a quote or a newline."""
    if any(c in value for c in (delimiter, '"', "\n", "\r")):
        return '"' + value.replace('"', '""') + '"'
    return value


def _text(rows: list[list[str]], delimiter: str, newline: str = "\r\n") -> str:
    return "".join(delimiter.join(_excel_cell(v, delimiter) for v in row) + newline for row in rows)


def _rows(*data: tuple[int, str, str]) -> list[list[str]]:
    return [HEADER] + [[uid(n), amount, comment, TITLE, MESSAGE] for n, amount, comment in data]


def _russian_excel(path: Path) -> None:
    """Russian Excel's "CSV (разделители — запятые)": cp1251, and `;` (a Russian locale's list separator), CRLF;
    amounts typed as text with dots."""
    rows = _rows((1, "1.50", "Премия за неделю 48"), (2, "2.25", "Доплата; качество"))
    rows[1][3] = '{"EN": "Thanks", "RU": "Спасибо"}'
    path.write_bytes(_text(rows, ";").encode("cp1251"))


def _russian_decimal_comma(path: Path) -> None:
    """The same export with the amounts Excel shows in a Russian locale: `12,50` and `1 234,50` (NBSP)."""
    rows = _rows((1, "1.50", "Премия"), (2, "12,50", "Премия"), (3, "1\u00a0234,50", "Премия"))
    path.write_bytes(_text(rows, ";").encode("cp1251"))


def _unicode_text(encoding: str):
    def write(path: Path) -> None:
        """Excel's "Unicode text" (.txt): UTF-16 with a byte-order mark, tab-separated, CRLF."""
        rows = _rows((1, "1.50", "Премия за неделю 48"), (2, "2.25", "Größe ✓"))
        bom = "\ufeff".encode(encoding)
        path.write_bytes(bom + _text(rows, "\t").encode(encoding))
    return write


def _western(path: Path) -> None:
    """English/French Excel's CSV: cp1252, comma, CRLF, é and € in the comments."""
    rows = _rows((1, "1.50", "Prime de qualité – 5 €"), (2, "2.25", "Café, crème"))
    path.write_bytes(_text(rows, ",").encode("cp1252"))


def _unclear_encoding(path: Path) -> None:
    """cp1251 whose only non-ASCII character is "№" (cp1252 reads the same byte as "¹"): both are plausible."""
    rows = _rows((1, "1.50", "Bonus № 48"))
    path.write_bytes(_text(rows, ",").encode("cp1251"))


def _google_sheets(path: Path) -> None:
    """Google Sheets' "Download > CSV": UTF-8 without BOM, comma, CRLF, quotes only where needed."""
    rows = _rows((1, "1.50", "Thanks, Zoë"), (2, "2.25", "week 48"), (3, "1.505", "week 48"))
    path.write_bytes(_text(rows, ",").encode("utf-8"))


def _huge_unused_cell(path: Path) -> None:
    """A 10 MB cell in a column payout does not use (pyarrow's 1 MB block once failed the whole sheet)."""
    rows = [HEADER + ["notes"]] + [[uid(1), "1.50", "row 2", TITLE, MESSAGE, "x" * (10 << 20)],
                                   [uid(2), "2.25", "row 3", TITLE, MESSAGE, "short"]]
    path.write_bytes(_text(rows, ",", "\n").encode("utf-8"))


def _huge_comment(path: Path) -> None:
    """A 10 MB private comment spanning lines: that row is refused for its length, the others are paid."""
    rows = _rows((1, "1.50", "row 2"), (2, "2.25", ("y" * 1000 + "\n") * 10_000), (3, "3.00", "row 4"))
    path.write_bytes(_text(rows, ",", "\n").encode("utf-8"))


def _nested_parquet(path: Path) -> None:
    """A Parquet export with nested columns we do not use (a struct and a list): left out with a notice."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({
        "user_id": [uid(1), uid(2)], "amount": ["1.50", "2.25"], "public_title": [TITLE, TITLE],
        "public_message": [MESSAGE, MESSAGE],
        "meta": pa.array([{"source": "crm", "id": 1}, {"source": "crm", "id": 2}]),
        "tags": pa.array([["a", "b"], []], pa.list_(pa.string())),
    }), path)


def _nested_amount(path: Path) -> None:
    """A Parquet sheet whose amount column is a struct: it is needed, so the sheet is refused naming it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({
        "user_id": [uid(1)], "amount": pa.array([{"value": 150, "currency": "USD"}]), "public_title": [TITLE],
        "public_message": [MESSAGE],
    }), path)


PAID_2 = ((uid(1), "1.50"), (uid(2), "2.25"))

CASES = [
    Case("csv_russian_excel.csv", exit=0, write=_russian_excel, paid=PAID_2, rows=2,
         says=("cp1251", "semicolon"), about="Russian Excel: cp1251, ';', CRLF, dot amounts; encoding detected"),
    Case("csv_russian_decimal_comma.csv", exit=1, write=_russian_decimal_comma, paid=((uid(1), "1.50"),),
         errors=((3, "amount", "12,50"), (4, "amount", "234,50")), statuses={2: "paid", 3: "invalid", 4: "invalid"},
         about="Russian Excel with 12,50 and 1 234,50: refused per row without --decimal-comma"),
    Case("csv_russian_excel_declared.csv", exit=0, write=_russian_excel, args=("--encoding", "cp1251"), paid=PAID_2,
         says=("cp1251",), about="the same sheet with --encoding cp1251"),
    Case("csv_utf8_bom.csv", exit=0, paid=PAID_2, rows=2, about="Excel's 'CSV UTF-8': a byte-order mark"),
    Case("csv_utf8_semicolon.csv", exit=0, paid=PAID_2, says=("semicolon",),
         about="LibreOffice's UTF-8 export with ';' (a comma inside a cell)"),
    Case("csv_unicode_text_le.txt", exit=0, write=_unicode_text("utf-16-le"), paid=PAID_2, says=("utf-16-le", "tab"),
         about="Excel's 'Unicode text': UTF-16 LE with BOM, tab-separated"),
    Case("csv_unicode_text_be.txt", exit=0, write=_unicode_text("utf-16-be"), paid=PAID_2, says=("utf-16-be",),
         about="UTF-16 BE with BOM, tab-separated"),
    Case("csv_western_cp1252.csv", exit=0, write=_western, paid=PAID_2, says=("cp1252",),
         about="cp1252 with é and € in the comments; encoding detected"),
    Case("csv_pipe.csv", exit=0, paid=PAID_2, says=("pipe",), about="'|' delimiter"),
    Case("csv_unclear_encoding.csv", exit=2, write=_unclear_encoding,
         says=("encoding is unclear", "--encoding cp1251", "--encoding cp1252"),
         about="cp1251 or cp1252 both plausible: refused, naming --encoding"),
    Case("csv_unclear_delimiter.csv", exit=2, says=("delimiter", "is unclear", "--delimiter ';'", "--delimiter ','"),
         about="';' and ',' both split header and rows evenly, no known column names: refused, naming --delimiter"),
    Case("csv_blank_lines.csv", exit=1, paid=((uid(1), "1.50"), (uid(3), "3.00")),
         errors=((4, "amount", "not a number"),), statuses={2: "paid", 4: "invalid", 7: "paid"}, rows=3,
         about="blank lines are rows: errors on the row numbers LibreOffice shows"),
    Case("csv_multiline_cells.csv", exit=1, paid=((uid(1), "1.50"), (uid(3), "3.00")),
         errors=((3, "amount", "below the minimum"),), statuses={2: "paid", 3: "invalid", 4: "paid"}, rows=3,
         about="quoted cells spanning lines are one row each"),
    Case("csv_short_rows.csv", exit=1, paid=PAID_2, statuses={2: "paid", 3: "paid", 4: "invalid"},
         errors=((4, "public_title", "needed"),), says=("row(s) 3, 4 have fewer cells",),
         about="rows missing their trailing empty cells (some Excel versions): read as empty, not refused"),
    Case("csv_title_rows.csv", exit=1, args=("--header-row", "4"), paid=((uid(1), "1.50"),),
         errors=((6, "amount", "below the minimum"),), statuses={5: "paid", 6: "invalid"}, rows=2,
         about="title rows above the header, --header-row 4"),
    Case("csv_title_rows_found.csv", exit=1, paid=((uid(1), "1.50"),), says=("the header is row 4",),
         errors=((6, "amount", "below the minimum"),), statuses={5: "paid"},
         about="the same sheet without the flag: the header is found and reported"),
    Case("csv_header_row_past_end.csv", exit=2, args=("--header-row", "5"), says=("--header-row 5",),
         about="--header-row past the sheet's end"),
    Case("csv_over_max_rows.csv", exit=2, args=("--max-rows", "2"), says=("--max-rows",),
         about="more rows than --max-rows: refused before the bulk is read"),
    Case("csv_over_max_columns.csv", exit=2, args=("--max-columns", "5"), says=("--max-columns",),
         about="more columns than --max-columns"),
    Case("csv_huge_cell_unused.csv", exit=0, write=_huge_unused_cell, paid=PAID_2,
         about="a 10 MB cell in an unused column is ignored (not 'straddling object')"),
    Case("csv_huge_comment.csv", exit=1, write=_huge_comment, paid=((uid(1), "1.50"), (uid(3), "3.00")),
         errors=((3, "private_comment", "characters long"),), statuses={2: "paid", 3: "invalid", 4: "paid"},
         about="a 10 MB multi-line comment: that row is invalid, the rest paid"),
    Case("csv_google_sheets.csv", exit=1, write=_google_sheets, paid=PAID_2,
         errors=((4, "amount", "decimals"),), statuses={2: "paid", 3: "paid", 4: "invalid"},
         about="Google Sheets: UTF-8 without BOM, CRLF"),
    Case("csv_nested_column.parquet", exit=0, write=_nested_parquet, paid=PAID_2, says=("'meta'", "'tags'"),
         about="Parquet with struct and list columns we do not use: left out, named in the summary"),
    Case("csv_nested_amount.parquet", exit=2, write=_nested_amount, says=("'amount'",),
         about="Parquet whose amount column is a struct: refused naming it"),
]
