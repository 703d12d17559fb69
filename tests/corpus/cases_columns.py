"""Column mappings, finance's own columns carried into the report, and near-duplicate rows.

Sheets with Russian headers read through the packaged `ru-finance` mapping (and refused, naming it, without
it); a --config file's own mapping; headers in odd case and spacing; columns payout does not read, carried into
rows.parquet and named in the summary (tests/test_mapping.py checks their values); and rows that repeat another
but for spacing, non-breaking spaces, the comment's letter case or the JSON layout of title and message: each
flagged `duplicate`, one of them paid.
"""

from __future__ import annotations

from pathlib import Path

from case import SHEETS, Case, uid


def _config(name: str) -> str:
    return str(SHEETS / name)


def _xlsx_ru_extra(path: Path) -> None:
    """Excel in a Russian locale: Russian headers, finance's own columns, amounts as numbers."""
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.title = "Бонусы"
    ws.append(["ID исполнителя", "Сумма", "Комментарий", "Заголовок", "Сообщение", "Отдел", "Дата"])
    ws.append([uid(30), 1.5, "Неделя 48", '{"RU": "Спасибо"}', '{"RU": "Бонус"}', "Продажи", "2026-11-30"])
    ws.append([uid(31), 2, "Неделя 48", '{"RU": "Спасибо"}', '{"RU": "Бонус"}', "Склад", None])
    wb.save(path)


def _parquet_mapped(path: Path) -> None:
    """A Parquet export with the packaged mapping's headers and an integer column of finance's own."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({
        "ID исполнителя": [uid(32), uid(33)],
        "Сумма": ["0.75", "1.25"],
        "Заголовок": ['{"EN": "Thanks"}'] * 2,
        "Сообщение": ['{"EN": "Bonus"}'] * 2,
        "Табельный номер": pa.array([1017, None], pa.int64()),
    }), path)


RU_PAID = ((uid(1), "2.00"), (uid(2), "3.50"))

CASES = [
    # --- mappings ---------------------------------------------------------------------------------------------
    Case("columns_ru_mapping.csv", exit=0, args=("--mapping", "ru-finance"), paid=RU_PAID, rows=2,
         about="Excel CSV UTF-8 (BOM, CRLF) with Russian headers, read through the packaged ru-finance mapping"),
    Case("columns_ru_no_mapping.csv", exit=2, says=("required column(s) user_id, amount missing",
                                                    "pass --mapping ru-finance"),
         about="the same sheet without --mapping: refused, and the message names the mapping that fits"),
    Case("columns_ru_unknown_mapping.csv", exit=2, args=("--mapping", "ru-fin"),
         says=("unknown mapping 'ru-fin'", "known: ru-finance"),
         about="a mapping name no config defines: refused, listing the known ones"),
    Case("columns_ru_odd_headers.csv", exit=0, args=("--mapping", "ru-finance"), paid=RU_PAID,
         about="Russian headers typed by hand (doubled and outer spaces, capitals): the mapping still matches"),
    Case("columns_odd_headers.csv", exit=0, paid=((uid(3), "1.25"), (uid(4), "4.00")),
         about="our own headers with capitals, outer spaces, hyphens and doubled spaces (a Google Sheets export)"),
    Case("columns_mapping_collision.csv", exit=2, args=("--mapping", "ru-finance"),
         says=("and 'amount' mean the same thing",),
         about="a sheet with both 'Сумма' and 'amount': under the mapping they are one column twice"),
    Case("columns_config_mapping.csv", exit=0,
         args=("--config", _config("columns_payroll.toml"), "--mapping", "payroll"), paid=((uid(8), "2.75"),),
         about="a --config file's own [mappings.payroll] table, chosen with --mapping"),
    Case("columns_config_default_mapping.csv", exit=0, args=("--config", _config("columns_payroll_default.toml")),
         paid=((uid(9), "3.25"),), about="a --config file that sets mapping = \"payroll\" itself"),
    Case("columns_config_bad_target.csv", exit=2, args=("--config", _config("columns_bad_target.toml")),
         says=("'Bonus USD' maps to 'bonus_amount', which is not a column payout reads",),
         about="a mapping to a column payout does not have: refused before the sheet is read"),
    Case("columns_ru_parquet.parquet", exit=0, args=("--mapping", "ru-finance"), write=_parquet_mapped,
         paid=((uid(32), "0.75"), (uid(33), "1.25")), says=("Табельный номер",),
         about="Parquet with the mapping's headers and an integer column of finance's own, carried as text"),
    # --- columns carried into the report ----------------------------------------------------------------------
    Case("columns_extra_carried.csv", exit=0, paid=((uid(5), "5.00"), (uid(6), "6.00")),
         says=("Sheet: columns_extra_carried.csv: columns payout does not read, carried into the report as "
               "sheet:<header>: Department, Approved by, note",),
         about="finance's own columns (one holding a formula-like text) carried into rows.parquet and named"),
    Case("columns_ru_extra.csv", exit=0, args=("--mapping", "ru-finance"), paid=RU_PAID,
         says=("Отдел, Согласовано",), about="Russian headers, the mapping and finance's own columns"),
    Case("columns_ru_extra.xlsx", exit=0, args=("--mapping", "ru-finance"), write=_xlsx_ru_extra,
         paid=((uid(30), "1.50"), (uid(31), "2.00")), says=("Отдел, Дата",),
         about="Excel (Russian locale) with the mapping's headers and columns of finance's own"),
    Case("columns_extra_only_row.csv", exit=1, paid=((uid(7), "1.00"),),
         statuses={2: "paid", 3: "invalid"}, errors=((3, "user_id", "missing"), (3, "amount", "missing")),
         about="a row where only finance's own column is filled: reported as invalid, never silently dropped"),
    # --- near duplicates --------------------------------------------------------------------------------------
    Case("columns_near_five_bonuses.csv", exit=1, paid=((uid(11), "2.00"), (uid(12), "2.00")),
         statuses={2: "paid", 3: "duplicate", 4: "duplicate", 5: "duplicate", 6: "duplicate", 7: "paid"},
         about="the issue's five $2.00 bonuses to one worker (comment case, NBSP, a space inside the title JSON, "
               "doubled space and a narrow NBSP): one paid, four duplicates"),
    Case("columns_near_nbsp.csv", exit=1, paid=((uid(13), "1.10"),),
         statuses={2: "paid", 3: "duplicate", 4: "duplicate"},
         about="non-breaking and narrow non-breaking spaces in comment, title and message"),
    Case("columns_near_json_layout.csv", exit=1, paid=((uid(14), "1.75"),),
         statuses={2: "paid", 3: "duplicate", 4: "duplicate", 5: "duplicate"},
         about="title and message JSON in another key order, spacing, a leading space in a string, an escaped NBSP"),
    Case("columns_near_multiline.csv", exit=1, paid=((uid(15), "1.00"),),
         statuses={2: "paid", 3: "duplicate", 4: "duplicate"},
         about="a comment with a line break (Alt+Enter) or a tab where the first has a space"),
    Case("columns_near_amount_differs.csv", exit=1, paid=((uid(16), "2.00"), (uid(16), "2.50")),
         statuses={2: "paid", 3: "paid", 4: "duplicate"},
         about="another amount is another bonus; 2.0 with the comment in capitals repeats 2.00"),
    Case("columns_near_title_case.csv", exit=0, paid=((uid(17), "1.00"),) * 3,
         statuses={2: "paid", 3: "paid", 4: "paid"},
         about="title or message in another letter case: the worker reads them, so they are different bonuses"),
    Case("columns_near_assignment.csv", exit=1, paid=((uid(18), "1.00"), (uid(19), "1.00")),
         statuses={2: "paid", 3: "duplicate", 4: "paid"},
         about="another assignment id does not make a bonus another one (Toloka's 409 rule): a repeat"),
    Case("columns_near_reject_all.csv", exit=1, args=("--dedupe-policy", "reject-all"),
         paid=((uid(21), "1.00"),), statuses={2: "duplicate", 3: "paid", 4: "duplicate", 5: "duplicate"},
         about="reject-all: every row of a near-duplicate group is refused, none paid"),
]
