""".xlsx sheets as Excel, LibreOffice and Google Sheets write them: several sheets, title rows above the header,
float noise and uncalculated formulas, hidden and blank rows, numbers and dates where text is expected, and a
4.7 KB file claiming a cell at XFD1048576.

Sheets made by a spreadsheet's own writer are written with openpyxl or xlsxwriter; the ones whose bytes matter
(Excel's 17-digit floats, a formula with no cached value, LibreOffice's inline strings, Google's styled empty
grid, a lying <dimension>) are written as raw XML into a zip, the way those programs lay them out.
"""

from __future__ import annotations

import datetime as dt
import zipfile
from pathlib import Path
from xml.sax.saxutils import escape

from case import MESSAGE, TITLE, Case, uid

from pipeline.contract import column_letters

HEADER = ["user_id", "amount", "private_comment", "public_title", "public_message"]


def _bonus(n: int, amount: object, comment: object = None) -> list[object]:
    return [uid(n), amount, f"row for user {n}" if comment is None else comment, TITLE, MESSAGE]


# --- writers -----------------------------------------------------------------------------------


def _xlsxwriter(path: Path, sheets: dict[str, list[list[object]]], hide_rows: tuple[int, ...] = (),
                hide_cols: tuple[int, ...] = ()) -> None:
    """Like Excel itself: shared strings, numbers as number cells, `None` as no cell; rows listed from row 1."""
    import xlsxwriter

    wb = xlsxwriter.Workbook(str(path), {"strings_to_numbers": False, "strings_to_formulas": False,
                                         "strings_to_urls": False})
    date_format = wb.add_format({"num_format": "yyyy-mm-dd"})
    for name, rows in sheets.items():
        ws = wb.add_worksheet(name)
        for r, values in enumerate(rows):
            for c, v in enumerate(values):
                if isinstance(v, dt.date):
                    ws.write_datetime(r, c, dt.datetime.combine(v, dt.time()), date_format)
                elif v is not None:
                    ws.write(r, c, v)
        for r in hide_rows:
            ws.set_row(r - 1, None, None, {"hidden": True})
        for c in hide_cols:
            ws.set_column(c - 1, c - 1, None, None, {"hidden": True})
    wb.close()


def _cell(ref: str, v: object, inline: bool = False) -> str:
    """One <c> element. Text is an inline string (LibreOffice-style when `inline`) or raw XML if it starts with
    '<' (a formula or an exact <v>), numbers are written as given (str for exact digits)."""
    if isinstance(v, str) and v.startswith("<"):
        return f'<c r="{ref}">{v}</c>'
    if isinstance(v, str):
        return f'<c r="{ref}" s="0" t="inlineStr"><is><t xml:space="preserve">{escape(v)}</t></is></c>'
    return f'<c r="{ref}" s="0" t="n"><v>{v!r}</v></c>'


def _sheet_xml(rows: dict[int, list[object]], dimension: str | None = None, row_attrs: str = "",
               extra_rows: str = "", head: str = "") -> str:
    body = "".join(
        f'<row r="{r}"{row_attrs}>'
        + "".join(_cell(f"{column_letters(c + 1)}{r}", v) for c, v in enumerate(vals) if v is not None)
        + "</row>" for r, vals in sorted(rows.items()))
    dim = f'<dimension ref="{dimension}"/>' if dimension else ""
    return ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
            'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
            f"{dim}{head}<sheetData>{body}{extra_rows}</sheetData></worksheet>")


def _raw_xlsx(path: Path, sheets: dict[str, str], shared: list[str] | None = None) -> None:
    """A minimal, valid package around the given worksheet XML texts (and shared strings)."""
    ct = ['<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<Types xmlns="http://schemas.openxmlformats.org/'
          'package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
          'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/'
          'workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>']
    book, rels = [], []
    for i, name in enumerate(sheets, start=1):
        ct.append(f'<Override PartName="/xl/worksheets/sheet{i}.xml" ContentType="application/vnd.openxmlformats-'
                  'officedocument.spreadsheetml.worksheet+xml"/>')
        book.append(f'<sheet name="{escape(name)}" sheetId="{i}" r:id="rId{i}"/>')
        rels.append(f'<Relationship Id="rId{i}" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
                    f'relationships/worksheet" Target="worksheets/sheet{i}.xml"/>')
    if shared is not None:
        ct.append('<Override PartName="/xl/sharedStrings.xml" ContentType="application/vnd.openxmlformats-'
                  'officedocument.spreadsheetml.sharedStrings+xml"/>')
        rels.append('<Relationship Id="rIdS" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
                    'relationships/sharedStrings" Target="sharedStrings.xml"/>')
    ct.append("</Types>")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", "".join(ct))
        z.writestr("_rels/.rels", '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<Relationships xmlns='
                   '"http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type='
                   '"http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target='
                   '"xl/workbook.xml"/></Relationships>')
        z.writestr("xl/workbook.xml", '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<workbook xmlns='
                   '"http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats'
                   f'.org/officeDocument/2006/relationships"><sheets>{"".join(book)}</sheets></workbook>')
        z.writestr("xl/_rels/workbook.xml.rels", '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
                   '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
                   f'{"".join(rels)}</Relationships>')
        for i, xml in enumerate(sheets.values(), start=1):
            z.writestr(f"xl/worksheets/sheet{i}.xml", xml)
        if shared is not None:
            items = "".join(f"<si><t xml:space=\"preserve\">{escape(s)}</t></si>" for s in shared)
            z.writestr("xl/sharedStrings.xml", '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<sst xmlns='
                       f'"http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="{len(shared)}" '
                       f'uniqueCount="{len(shared)}">{items}</sst>')


# --- the sheets --------------------------------------------------------------------------------

WEEK_48 = [HEADER, _bonus(1, 1.5), _bonus(2, 2.25)]
WEEK_49 = [HEADER, _bonus(3, 3.0), _bonus(4, 4.75)]


def _two_sheets(path: Path) -> None:
    _xlsxwriter(path, {"Week 48": WEEK_48, "Week 49": WEEK_49})


def _data_among_empty(path: Path) -> None:
    _xlsxwriter(path, {"Notes": [], "Data": WEEK_48, "Sheet3": []})


def _title_rows(path: Path) -> None:
    _xlsxwriter(path, {"Bonuses": [["Bonuses week 48"], [], HEADER, _bonus(1, 1.5), _bonus(2, 2.25)]})


def _header_row_flag(path: Path) -> None:
    # the legend above the table names the columns too, so only --header-row says which row is the header
    _xlsxwriter(path, {"Bonuses": [["Legend:", "user_id", "amount"], ["Prepared by finance"], [], HEADER,
                                   _bonus(1, 1.5), _bonus(2, 2.25)]})


def _header_missing(path: Path) -> None:
    _xlsxwriter(path, {"Bonuses": [["Bonuses week 48"], ["ID", "Sum"], [uid(1), 1.5]]})


def _float_noise(path: Path) -> None:
    # Excel stores =0.1+0.2 as 0.30000000000000004 (17 digits) and shows 0.30; =1.45*3 as 4.3500000000000005
    rows = {1: HEADER, 2: [uid(1), "<f>0.1+0.2</f><v>0.30000000000000004</v>", "formula", TITLE, MESSAGE],
            3: [uid(2), "<f>1.45*3</f><v>4.3500000000000005</v>", "formula", TITLE, MESSAGE],
            4: [uid(3), "<v>1.1000000000000001</v>", "pasted", TITLE, MESSAGE]}
    _raw_xlsx(path, {"Sheet1": _sheet_xml(rows, "A1:E4")})


def _three_decimals(path: Path) -> None:
    _xlsxwriter(path, {"Sheet1": [HEADER, _bonus(1, 1.25), _bonus(2, 0.123)]})


def _uncalculated_formula(path: Path) -> None:
    # written by a script (openpyxl, xlsxwriter without a value): the formula is there, its result is not
    rows = {1: HEADER, 2: [uid(1), 1.5, "typed", TITLE, MESSAGE],
            3: [uid(2), "<f>SUM(B2:B2)</f>", "formula without a value", TITLE, MESSAGE],
            4: [uid(3), "<f>B2*2</f><v></v>", "empty cached value", TITLE, MESSAGE]}
    _raw_xlsx(path, {"Sheet1": _sheet_xml(rows, "A1:E4")})


def _hidden(path: Path) -> None:
    rows = [HEADER + ["internal"], _bonus(1, 1.5) + ["x"], _bonus(2, 2.25) + ["y"], _bonus(3, 3.5) + ["z"]]
    _xlsxwriter(path, {"Sheet1": rows}, hide_rows=(3,), hide_cols=(6,))


def _blank_rows(path: Path) -> None:
    _xlsxwriter(path, {"Sheet1": [HEADER, _bonus(1, 1.5), [], _bonus(2, 2.25), [], _bonus(3, "1,50")]})


def _numeric_ids(path: Path) -> None:
    _xlsxwriter(path, {"Sheet1": [HEADER, _bonus(1, 1.5, comment=12345.5), [12345, 2.5, 42, TITLE, MESSAGE]]})


def _dates_in_comment(path: Path) -> None:
    _xlsxwriter(path, {"Sheet1": [HEADER, _bonus(1, 1.5, comment=dt.date(2026, 11, 30)),
                                  _bonus(2, 2.25, comment=dt.date(2026, 12, 7))]})


def _bomb(path: Path, dimension: str | None) -> None:
    """One cell at XFD1048576 (the last cell Excel has): 17 billion cells for a reader that fills the range."""
    rows = {1: HEADER, 2: _bonus(1, 1.5)}
    extra = '<row r="1048576"><c r="XFD1048576" t="inlineStr"><is><t>x</t></is></c></row>'
    _raw_xlsx(path, {"Sheet1": _sheet_xml(rows, dimension, extra_rows=extra)})


def _libreoffice(path: Path) -> None:
    """LibreOffice Calc's layout: every row with its formatting attributes (hidden="false"), inline strings."""
    attrs = (' customFormat="false" ht="12.8" hidden="false" customHeight="false" outlineLevel="0" '
             'collapsed="false"')
    rows = {1: HEADER, 2: _bonus(1, 1.5), 3: _bonus(2, 2.25)}
    head = '<sheetPr filterMode="false"><pageSetUpPr fitToPage="false"/></sheetPr>'
    xml = _sheet_xml(rows, "A1:E3", row_attrs=attrs, head=head)
    _raw_xlsx(path, {"Sheet1": xml.replace('<dimension ref="A1:E3"/>' + head, head + '<dimension ref="A1:E3"/>')})


def _google_sheets(path: Path) -> None:
    """Google Sheets' export: shared strings, and the whole 1000 x 26 grid written as styled empty cells."""
    shared = HEADER + [uid(1), uid(2), "row for user 1", "row for user 2", TITLE, MESSAGE]
    at = {s: i for i, s in enumerate(shared)}

    def s(text: str) -> str:
        return f'<c r="{{ref}}" s="1" t="s"><v>{at[text]}</v></c>'

    lines = []
    data = {1: [s(h) for h in HEADER],
            2: [s(uid(1)), '<c r="{ref}" s="2"><v>1.5</v></c>', s("row for user 1"), s(TITLE), s(MESSAGE)],
            3: [s(uid(2)), '<c r="{ref}" s="2"><v>2.25</v></c>', s("row for user 2"), s(TITLE), s(MESSAGE)]}
    for r in range(1, 1001):
        cells = [c.format(ref=f"{column_letters(i + 1)}{r}") for i, c in enumerate(data.get(r, []))]
        cells += [f'<c r="{column_letters(i + 1)}{r}" s="3"/>' for i in range(len(cells), 26)]
        lines.append(f'<row r="{r}">{"".join(cells)}</row>')
    xml = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<worksheet xmlns="http://schemas.openxmlformats'
           '.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"'
           '><sheetPr><outlinePr summaryBelow="0" summaryRight="0"/></sheetPr><sheetViews><sheetView workbookViewId="0"'
           '/></sheetViews><sheetFormatPr customHeight="1" defaultColWidth="12.63" defaultRowHeight="15.75"/><sheetData>'
           f'{"".join(lines)}</sheetData><drawing r:id="rId1"/></worksheet>')
    _raw_xlsx(path, {"Sheet1": xml}, shared)


PAID_48 = ((uid(1), "1.50"), (uid(2), "2.25"))

CASES = [
    Case("xlsx_two_sheets.xlsx", exit=2, write=_two_sheets, says=("'Week 48', 'Week 49'", "--sheet NAME"),
         about="two sheets hold data and none is named: refused, both listed"),
    Case("xlsx_two_sheets_chosen.xlsx", exit=0, write=_two_sheets, args=("--sheet", "Week 49"),
         paid=((uid(3), "3.00"), (uid(4), "4.75")), rows=2, about="--sheet picks one of two"),
    Case("xlsx_unknown_sheet.xlsx", exit=2, write=_two_sheets, args=("--sheet", "Week 50"),
         says=("no sheet named 'Week 50'", "'Week 48', 'Week 49'"), about="a --sheet the workbook lacks"),
    Case("xlsx_data_among_empty.xlsx", exit=0, write=_data_among_empty, paid=PAID_48, rows=2,
         says=("read sheet 'Data'",), about="one sheet with data among empty ones: read, and said which"),
    Case("xlsx_title_rows.xlsx", exit=0, write=_title_rows, paid=PAID_48, statuses={4: "paid", 5: "paid"}, rows=2,
         says=("header found on row 3",), about="a title and a blank row above the header"),
    Case("xlsx_header_row_flag.xlsx", exit=0, write=_header_row_flag, args=("--header-row", "4"), paid=PAID_48,
         statuses={5: "paid", 6: "paid"}, says=("header read from row 4",), about="--header-row names the header"),
    Case("xlsx_header_missing.xlsx", exit=2, write=_header_missing,
         says=("required column(s) user_id, amount missing", "--header-row"), about="no header anywhere"),
    Case("xlsx_float_noise.xlsx", exit=0, write=_float_noise,
         paid=((uid(1), "0.30"), (uid(2), "4.35"), (uid(3), "1.10")), rows=3,
         about="=0.1+0.2 stored as 0.30000000000000004 is paid 0.30, as Excel shows it"),
    Case("xlsx_three_decimals.xlsx", exit=1, write=_three_decimals, paid=((uid(1), "1.25"),),
         errors=((3, "amount", "decimals"),), statuses={2: "paid", 3: "invalid"},
         about="0.123 is not within 1e-9 of a cent: refused as more than 2 decimals"),
    Case("xlsx_uncalculated_formula.xlsx", exit=1, write=_uncalculated_formula, paid=((uid(1), "1.50"),),
         errors=((3, "amount", "formula not calculated: open and save the file in Excel"),
                 (4, "amount", "formula not calculated")), statuses={2: "paid", 3: "invalid", 4: "invalid"},
         about="a formula with no cached value is not paid"),
    Case("xlsx_hidden.xlsx", exit=0, write=_hidden, paid=PAID_48 + ((uid(3), "3.50"),), rows=3,
         says=("1 hidden row (3) and 1 hidden column (F) were read and are in the report",),
         about="hidden rows and columns are read, paid and said"),
    Case("xlsx_blank_rows.xlsx", exit=1, write=_blank_rows, paid=PAID_48, errors=((6, "amount", "decimal comma"),),
         statuses={2: "paid", 4: "paid", 6: "invalid"}, rows=3, about="blank rows keep the real row numbers"),
    Case("xlsx_numeric_ids.xlsx", exit=1, write=_numeric_ids, paid=((uid(1), "1.50"),),
         errors=((3, "user_id", "12345"),), statuses={2: "paid", 3: "invalid"},
         about="a numeric user id reads as 12345 (refused, not 12345.00); a numeric comment is kept"),
    Case("xlsx_dates_in_comment.xlsx", exit=0, write=_dates_in_comment, paid=PAID_48, rows=2,
         about="date cells in the comment column read as ISO dates"),
    Case("xlsx_bomb_xfd.xlsx", exit=2, write=lambda p: _bomb(p, "A1:XFD1048576"),
         says=("over the limit of 50,000,000", "--max-xlsx-cells"),
         about="4.7 KB claiming XFD1048576: refused from its <dimension>, nothing read"),
    Case("xlsx_bomb_xfd_lying_dimension.xlsx", exit=2, write=lambda p: _bomb(p, "A1:E2"),
         says=("reaches XFD1048576", "--max-xlsx-cells"),
         about="the same cell behind a dimension that lies: refused while streaming"),
    Case("xlsx_libreoffice.xlsx", exit=0, write=_libreoffice, paid=PAID_48, rows=2,
         about="LibreOffice Calc's layout: inline strings, hidden=\"false\" on every row"),
    Case("xlsx_google_sheets.xlsx", exit=0, write=_google_sheets, paid=PAID_48, rows=2,
         about="Google Sheets' export: shared strings and a 1000 x 26 grid of styled empty cells"),
]
