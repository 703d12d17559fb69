"""Plain sheets: the baseline every other area varies."""

from __future__ import annotations

from pathlib import Path

from case import MESSAGE, TITLE, Case, uid


def _xlsx_plain(path: Path) -> None:
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.append(["user_id", "amount", "private_comment", "public_title", "public_message"])
    ws.append([uid(1), 1.5, "row 2", TITLE, MESSAGE])
    ws.append([uid(2), "2.25", "row 3", TITLE, MESSAGE])
    wb.save(path)


CASES = [
    Case("basic_utf8.csv", exit=0, about="UTF-8, comma, dot decimals",
         paid=((uid(1), "1.50"), (uid(2), "2.25")), rows=2),
    Case("basic_invalid_row.csv", exit=1, about="one row with a bad amount: reported, not paid",
         paid=((uid(1), "1.50"),), errors=((3, "amount", "not a number"),), statuses={2: "paid", 3: "invalid"}),
    Case("basic_plain.xlsx", exit=0, write=_xlsx_plain, about="an .xlsx with numbers and text amounts",
         paid=((uid(1), "1.50"), (uid(2), "2.25")), rows=2),
]
