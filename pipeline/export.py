"""`payout report RUN_ID`: a run's rows.parquet as a file people open — CSV, Excel (.xlsx) or JSON.

One line per sheet row: where it came from, user, amount, status and the reason in words (report.row_reason),
then the ids. The texts come from finance's sheet (a user id or amount as written) and from servers (error
messages), so a cell a spreadsheet would take for a formula is neutralised (OWASP "CSV injection"): a text
starting with = + - @ tab or CR gets a leading `'` in CSV and .xlsx, and .xlsx cells are always strings, never
formulas or links. JSON keeps every text as it is (no spreadsheet evaluates it; machines need the exact value).
Amounts are exact: decimal text from the report's decimal(12,2) in CSV and JSON, a number cell in .xlsx whose
XML text is that same decimal (format 0.00).
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq

from pipeline.errors import UsageError
from pipeline.report import row_reason

FORMATS = ("csv", "xlsx", "json")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
FIRST = ("source_file", "source_row", "user_id", "amount", "status", "reason")
HIDDEN = ("errors", "note")  # both are in `reason`; JSON keeps `errors` as the list it is
XLSX_MAX_ROWS = 1_048_576  # Excel's sheet limit, header included
XLSX_MAX_CHARS = 32_767  # Excel's cell limit
RECENT = 5
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def neutralise(text: str) -> str:
    """`text`, with a leading `'` when a spreadsheet would read it as a formula (or a DDE command)."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def run_folder(out_dir: Path, run_id: str) -> Path:
    """The run's report folder; UsageError (exit 2) naming the recent runs when it holds no report."""
    out_dir = Path(out_dir)
    run_dir = out_dir / run_id
    if _RUN_ID.fullmatch(run_id) and (run_dir / "rows.parquet").is_file():
        return run_dir
    recent = sorted((p.parent.name for p in out_dir.glob("*/rows.parquet")), reverse=True)[:RECENT]
    known = f"recent runs: {', '.join(recent)}" if recent else "it holds no reports yet"
    raise UsageError(f"no report for run {run_id!r} under {out_dir} ({known}); `payout status` lists the runs, "
                     "and --data-dir/--out choose another report folder")


def export_run(out_dir: Path, run_id: str, fmt: str, output: Path | None = None) -> Path:
    """Write the run's rows as `fmt` to `output` (default OUT/<run_id>/rows.<fmt>), atomically; return the path."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}: choose one of {', '.join(FORMATS)}")
    run_dir = run_folder(out_dir, run_id)
    source = pq.ParquetFile(run_dir / "rows.parquet")
    if fmt == "xlsx" and source.metadata.num_rows >= XLSX_MAX_ROWS:
        raise UsageError(f"run {run_id} has {source.metadata.num_rows:,} rows, more than an Excel sheet holds "
                         f"({XLSX_MAX_ROWS - 1:,} below the header): use --format csv")
    summary = _summary(run_dir)
    path = Path(output) if output is not None else run_dir / f"rows.{fmt}"
    if path.is_dir():
        raise UsageError(f"--output {path} is a folder: name the file to write")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    columns = _columns(source.schema_arrow.names)
    try:
        {"csv": _write_csv, "xlsx": _write_xlsx, "json": _write_json}[fmt](tmp, columns, _records(source), summary)
        os.replace(tmp, path)
    except OSError as exc:
        raise UsageError(f"cannot write {path} ({exc.strerror or exc}): choose another --output") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _summary(run_dir: Path) -> dict[str, Any]:
    try:
        doc = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _columns(names: list[str]) -> list[str]:
    """The people's order: FIRST, then the ids and any column a newer report adds (run_id last)."""
    rest = [n for n in names if n not in FIRST and n not in HIDDEN and n != "run_id"]
    return [*FIRST, *rest, "run_id"]


def _records(source: pq.ParquetFile) -> Iterator[dict[str, Any]]:
    """Each row as a dict: `amount` as exact decimal text ("12.50", None if the sheet had none), `reason` in
    words, `errors` as the list of {column, code, message}; read a batch at a time (a 1M-row report)."""
    for batch in source.iter_batches(batch_size=50_000):
        for row in batch.to_pylist():
            amount = row.get("amount")
            row["amount"] = _decimal_text(amount) if isinstance(amount, Decimal) else None
            row["reason"] = row_reason(row.get("errors"), row.get("note"))
            yield row


def _decimal_text(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.01')):f}"


def _cell(value: Any) -> Any:
    """A CSV cell: texts neutralised, numbers as they are, nothing for a null."""
    if value is None:
        return ""
    return neutralise(value) if isinstance(value, str) else value


def _write_csv(path: Path, columns: list[str], records: Iterator[dict[str, Any]], summary: dict[str, Any]) -> None:
    # utf-8-sig: Excel reads a UTF-8 CSV as the machine's code page unless it starts with a byte order mark
    with path.open("w", encoding="utf-8-sig", newline="") as f:
        writer = csv.writer(f, quoting=csv.QUOTE_MINIMAL)
        writer.writerow(columns)
        for row in records:
            writer.writerow([row["amount"] or "" if name == "amount" else _cell(row.get(name)) for name in columns])


def _write_json(path: Path, columns: list[str], records: Iterator[dict[str, Any]], summary: dict[str, Any]) -> None:
    """{"summary": summary.json, "rows": [...]}, streamed: texts exact, amounts as decimal text."""
    with path.open("wb") as f:
        f.write(b'{"summary": ' + orjson.dumps(summary) + b',\n "rows": [')
        for i, row in enumerate(records):
            doc = {name: row.get(name) for name in [*columns, "errors"]}
            f.write((b"\n  " if i == 0 else b",\n  ") + orjson.dumps(doc))
        f.write(b"\n]}\n")


def _write_xlsx(path: Path, columns: list[str], records: Iterator[dict[str, Any]], summary: dict[str, Any]) -> None:
    """Rows on the first sheet, the run's counts and amounts on a second; every text written as a string."""
    import xlsxwriter  # only this command needs it

    # never a formula or a link from a text; constant_memory: rows stream to disk (a 1M-row report)
    book = xlsxwriter.Workbook(str(path), {"strings_to_formulas": False, "strings_to_urls": False,
                                           "strings_to_numbers": False, "constant_memory": True})
    try:
        bold = book.add_format({"bold": True})
        money = book.add_format({"num_format": "0.00"})
        sheet = book.add_worksheet("Rows")
        for c, name in enumerate(columns):
            sheet.write_string(0, c, name, bold)
        sheet.freeze_panes(1, 0)
        n = 0
        for n, row in enumerate(records, start=1):
            for c, name in enumerate(columns):
                value = row["amount"] if name == "amount" else row.get(name)
                if value is None:
                    continue
                if name == "amount":  # the decimal text itself: xlsxwriter writes repr(float), the same digits
                    sheet.write_number(n, c, float(value), money)
                elif isinstance(value, int) and not isinstance(value, bool):
                    sheet.write_number(n, c, value)
                else:
                    sheet.write_string(n, c, _xlsx_text(str(value)))
        sheet.autofilter(0, 0, n, len(columns) - 1)
        _summary_sheet(book.add_worksheet("Summary"), summary, bold, money)
    finally:
        book.close()


def _xlsx_text(text: str) -> str:
    text = neutralise(text)
    return text if len(text) <= XLSX_MAX_CHARS else text[:XLSX_MAX_CHARS - 1] + "…"


def _summary_sheet(sheet: Any, summary: dict[str, Any], bold: Any, money: Any) -> None:
    r = 0
    for key in ("run_id", "batch_id", "env", "api_url", "dry_run", "started", "finished", "rows_total"):
        if summary.get(key) is not None:
            sheet.write_string(r, 0, key, bold)
            sheet.write_string(r, 1, _xlsx_text(str(summary[key])))
            r += 1
    counts, amounts = summary.get("counts") or {}, summary.get("amounts") or {}
    if counts:
        r += 1
        for c, name in enumerate(("status", "rows", "amount")):
            sheet.write_string(r, c, name, bold)
        for status, count in counts.items():
            r += 1
            sheet.write_string(r, 0, _xlsx_text(str(status)))
            sheet.write_number(r, 1, int(count))
            if amounts.get(status) is not None:
                sheet.write_number(r, 2, float(Decimal(str(amounts[status]))), money)
