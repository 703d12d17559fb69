"""One run's reconciliation report, written atomically, so finance can account for every sheet row."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.money import format_cents, format_usd

STATUSES = ("paid", "failed", "invalid", "duplicate", "already_paid", "held_repeat", "pending", "unknown", "planned")
LABELS = {
    "paid": "Paid",
    "failed": "Failed",
    "invalid": "Invalid",
    "duplicate": "Duplicate",
    "already_paid": "Already paid",
    "held_repeat": "Held repeat",
    "pending": "Pending",
    "unknown": "Unknown",
    "planned": "Planned",
}
AMOUNT_TYPE = pa.decimal128(12, 2)
ERROR_TYPE = pa.struct([("column", pa.string()), ("code", pa.string()), ("message", pa.string())])
ROWS_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("source_file", pa.string()),
        ("source_row", pa.int64()),
        ("row_key", pa.string()),
        ("user_id", pa.string()),
        ("amount", AMOUNT_TYPE),
        ("status", pa.string()),
        ("errors", pa.list_(ERROR_TYPE)),
        ("operation_id", pa.string()),
        ("bonus_id", pa.string()),
        ("note", pa.string()),
    ]
)
# Timestamps stay the strings Toloka sent (ISO 8601, UTC, often without an offset): no re-interpretation.
OPERATIONS_SCHEMA = pa.schema(
    [
        ("operation_id", pa.string()),
        ("chunk_no", pa.int64()),
        ("attempt", pa.int64()),
        ("status", pa.string()),
        ("submitted", pa.string()),
        ("started", pa.string()),
        ("finished", pa.string()),
        ("progress", pa.int64()),
        ("total_count", pa.int64()),
        ("valid_count", pa.int64()),
        ("not_valid_count", pa.int64()),
        ("success_count", pa.int64()),
        ("failed_count", pa.int64()),
        ("item_count", pa.int64()),
    ]
)
_INPUT_COLUMNS = ["amount_cents" if f.name == "amount" else f.name for f in ROWS_SCHEMA]


def write_report(out_root: Path, run_id: str, rows: pd.DataFrame, operations: pd.DataFrame, meta: dict) -> Path:
    """Write OUT/<run_id>/{rows,operations}.parquet and summary.json, each atomically; return the run folder.

    Raises ValueError if `rows` lacks a column or holds a status outside STATUSES.
    """
    run_dir = Path(out_root) / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "rows": run_dir / "rows.parquet",
        "operations": run_dir / "operations.parquet",
        "summary": run_dir / "summary.json",
    }
    _check_rows(rows)
    ops_table = operations_to_table(operations)
    summary = summarize(rows, {**meta, "run_id": run_id})
    summary["reports"] = {name: str(path) for name, path in paths.items()}
    _atomic(paths["rows"], lambda tmp: _write_rows(rows, tmp))
    _atomic(paths["operations"], lambda tmp: pq.write_table(ops_table, tmp))
    text = json.dumps(summary, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"
    _atomic(paths["summary"], lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return run_dir


def read_rows(run_dir: Path) -> pd.DataFrame:
    """The rows of a written report, shaped like write_report's input (amount_cents Int64, errors as lists of dicts)."""
    table = pq.read_table(Path(run_dir) / "rows.parquet")
    frame = table.drop(["amount", "errors"]).to_pandas()
    frame["amount_cents"] = _decimal_to_cents(table.column("amount").combine_chunks())
    frame["errors"] = _errors_to_lists(table.column("errors").combine_chunks())
    return frame[_INPUT_COLUMNS]


ROWS_PER_BATCH = 100_000


def _write_rows(rows: pd.DataFrame, path: Path) -> None:
    """rows.parquet converted and written a slice at a time: the Arrow copy of a 1M-row report (~250 MiB) is
    never whole in memory. Same schema and values; one row group per slice.

    Converting a slice needs the GIL (Python objects -> Arrow); encoding and compressing one does not, so a
    writer thread encodes slice k while this thread converts slice k+1 (at most two slices alive)."""
    with pq.ParquetWriter(path, ROWS_SCHEMA) as writer, ThreadPoolExecutor(1) as pool:
        pending = None
        for start in range(0, max(len(rows), 1), ROWS_PER_BATCH):
            table = rows_to_table(rows.iloc[start:start + ROWS_PER_BATCH])
            if pending is not None:
                pending.result()  # in order, and re-raises a write error here
            pending = pool.submit(writer.write_table, table)
            del table
        if pending is not None:
            pending.result()


def _check_rows(rows: pd.DataFrame) -> None:
    missing = [c for c in _INPUT_COLUMNS if c not in rows.columns]
    if missing:
        raise ValueError(f"report rows lack columns: {', '.join(missing)}")
    bad = set(rows["status"].unique()) - set(STATUSES)
    if bad:
        raise ValueError(f"report rows have unknown statuses: {', '.join(sorted(map(str, bad)))}")


def rows_to_table(rows: pd.DataFrame) -> pa.Table:
    """Column-wise Arrow conversion of the reconciliation rows to ROWS_SCHEMA; amounts go cents -> decimal exactly."""
    _check_rows(rows)
    arrays = {
        name: pa.array(rows[name], type=pa.string(), from_pandas=True)
        for name in ("run_id", "source_file", "row_key", "user_id", "status", "operation_id", "bonus_id", "note")
    }
    arrays["source_row"] = pa.array(rows["source_row"].to_numpy(dtype="int64"), type=pa.int64())
    arrays["amount"] = _cents_to_decimal(rows["amount_cents"])
    arrays["errors"] = _errors_to_arrow(rows["errors"])
    return pa.Table.from_arrays([arrays[f.name] for f in ROWS_SCHEMA], schema=ROWS_SCHEMA)


def operations_to_table(operations: pd.DataFrame) -> pa.Table:
    """One row per operation in OPERATIONS_SCHEMA; a field the operation does not have yet is null."""
    ops = operations.reindex(columns=OPERATIONS_SCHEMA.names)
    arrays = []
    for field in OPERATIONS_SCHEMA:
        column = ops[field.name]
        if field.type == pa.string():
            values = [None if _isna(v) else str(v) for v in column]
            arrays.append(pa.array(values, type=pa.string()))
        else:
            arrays.append(pa.array(column.astype("Int64"), type=pa.int64(), from_pandas=True))
    return pa.Table.from_arrays(arrays, schema=OPERATIONS_SCHEMA)


def summarize(rows: pd.DataFrame, meta: dict) -> dict:
    """Counts and exact amounts per status merged over `meta` (run_id, batch_id, env, dry_run, started, ...).

    `meta["rerun_after"]`, when present, tells format_summary when pending rows can be re-run.
    """
    counts = rows["status"].value_counts()
    cents = rows["amount_cents"].astype("Int64").groupby(rows["status"]).sum()
    count = {s: int(counts.get(s, 0)) for s in STATUSES}
    amount = {s: int(cents.get(s, 0)) for s in STATUSES}
    summary: dict[str, Any] = dict.fromkeys(
        ("run_id", "batch_id", "env", "api_url", "dry_run", "started", "finished", "duration_s")
    )
    summary.update(meta)
    if summary["duration_s"] is None:
        summary["duration_s"] = _duration_s(summary["started"], summary["finished"])
    summary.update(
        rows_total=len(rows),
        counts=count,
        amounts={s: format_cents(amount[s]) for s in STATUSES},
        success_count=count["paid"],
        failed_count=count["failed"] + count["invalid"],
        pending_count=count["pending"] + count["unknown"],
        amount_paid=format_cents(amount["paid"]),
        amount_failed=format_cents(amount["failed"] + amount["invalid"]),
        amount_pending=format_cents(amount["pending"] + amount["unknown"]),
    )
    return summary


def format_summary(summary: dict) -> str:
    """Plain text for a finance person: rows and amounts per status, what needs attention, where the report is."""
    head = f"Run {summary.get('run_id')}"
    if summary.get("batch_id"):
        head += f"  batch {summary['batch_id']}"
    if summary.get("api_url") or summary.get("env"):
        head += f"  → {summary.get('api_url') or summary['env']}"
    if summary.get("dry_run"):
        head += "  (dry run: nothing was sent)"
    lines = [head]
    counts, amounts = summary["counts"], summary["amounts"]
    for status in STATUSES:
        if counts[status]:
            cents = _cents(amounts[status])
            unit = "row " if counts[status] == 1 else "rows"
            lines.append(f"  {LABELS[status]:<13}{counts[status]:>9,} {unit}  {format_usd(cents):>17}")
    lines.append(f"  {'Total':<13}{summary['rows_total']:>9,} rows")
    attention = _attention(summary)
    if attention:
        lines.append("Needs attention:")
        lines.extend(f"  {line}" for line in attention)
    elif summary["rows_total"]:
        lines.append("Nothing needs attention.")
    reports = summary.get("reports") or {}
    recovery = summary.get("recovery")
    if recovery:
        lines.append("Ledger: " + (recovery.get("error") or (
            f"new to this target: read its operations since {recovery['since']} ({recovery['requests']} requests): "
            f"{recovery['operations_new']} operation(s) it did not know, {recovery['rows_paid']:,} row(s) paid, "
            f"{recovery['rows_unknown']:,} of unknown outcome")))
    if "rows" in reports:
        lines.append(f"Report: {reports['rows']}")
    return "\n".join(lines)


def _attention(summary: dict) -> list[str]:
    counts = summary["counts"]
    out = []
    if counts["invalid"]:
        out.append(f"{_rows(counts['invalid'])} invalid — see the errors column; fix the sheet and run again")
    if counts["failed"]:
        out.append(f"{_rows(counts['failed'])} failed at Toloka, not paid — see the errors column; "
                   "`payout retry` re-sends those with a retryable error")
    if counts["duplicate"]:
        out.append(f"{_rows(counts['duplicate'])} duplicate — see the note column for the row each repeats")
    if counts["pending"]:
        when = f" after {summary['rerun_after']}" if summary.get("rerun_after") else ""
        out.append(f"{_rows(counts['pending'])} pending — run `payout run` again{when}; nothing is paid twice")
    if counts["unknown"]:
        out.append(f"{_rows(counts['unknown'])} of unknown outcome — never re-sent; `payout audit` settles them")
    if counts["held_repeat"]:
        out.append(f"{_rows(counts['held_repeat'])} held: each looks like a bonus paid under another batch in the "
                   "last days (see the note column); re-run with --allow-repeats if they are meant to be paid again")
    for gap in summary.get("unplanned") or ():
        out.append(f"{_rows(gap['rows'])} of batch {gap['batch_id']!r} never planned: run {gap['run_id']} stopped "
                   "before recording them; run `payout run` on that sheet again (nothing is paid twice)")
    if summary.get("superseded"):
        out.append(f"{_rows(summary['superseded'])} that failed earlier are no longer in the sheet (corrected or "
                   "deleted): superseded, never sent again")
    return out


def _rows(n: int) -> str:
    return f"{n:,} row" if n == 1 else f"{n:,} rows"


def _cents(decimal_text: str) -> int:
    whole, _, frac = decimal_text.lstrip("-").partition(".")
    value = int(whole) * 100 + int(frac or 0)
    return -value if decimal_text.startswith("-") else value


def _duration_s(started: Any, finished: Any) -> float | None:
    try:
        start = datetime.fromisoformat(str(started).replace("Z", "+00:00"))
        end = datetime.fromisoformat(str(finished).replace("Z", "+00:00"))
        return round((end - start).total_seconds(), 3)
    except (TypeError, ValueError):
        return None


def _cents_to_decimal(cents: pd.Series) -> pa.Array:
    """decimal128(12, 2) whose unscaled integers ARE the cents: two little-endian int64 words per value, no floats."""
    values = cents.astype("Int64")
    low = values.to_numpy(dtype="int64", na_value=0)
    data = np.empty((len(low), 2), dtype="<i8")
    data[:, 0] = low
    data[:, 1] = low >> 63  # sign extension into the high word
    validity_buf = pa.array(values.notna().to_numpy()).buffers()[1] if values.hasnans else None
    return pa.Array.from_buffers(AMOUNT_TYPE, len(low), [validity_buf, pa.py_buffer(data)])


def _decimal_to_cents(amount: pa.Array) -> pd.arrays.IntegerArray:
    words = np.frombuffer(amount.buffers()[1], dtype="<i8").reshape(-1, 2)
    words = words[amount.offset : amount.offset + len(amount)]
    mask = amount.is_null().to_numpy(zero_copy_only=False)
    return pd.arrays.IntegerArray(words[:, 0].copy(), mask)


def _errors_to_arrow(errors: pd.Series) -> pa.Array:
    """list<struct> built from offsets plus the few non-empty cells, because most rows carry no error."""
    cells = errors.to_numpy(dtype=object)
    nonempty = np.flatnonzero(cells.astype(bool))  # [] and None are falsy: one C-level pass, no Python loop
    lengths = np.zeros(len(cells), dtype="int32")
    lengths[nonempty] = [len(cells[i]) for i in nonempty]
    offsets = np.zeros(len(cells) + 1, dtype="int32")
    np.cumsum(lengths, out=offsets[1:])
    flat = [e for i in nonempty for e in cells[i]]
    fields = [pa.array([_text(e.get(name)) for e in flat], type=pa.string()) for name in ERROR_TYPE.names]
    values = pa.StructArray.from_arrays(fields, fields=list(ERROR_TYPE))
    return pa.ListArray.from_arrays(pa.array(offsets), values, type=pa.list_(ERROR_TYPE))


def _errors_to_lists(errors: pa.ListArray) -> list[list[dict]]:
    offsets = errors.offsets.to_numpy()
    out: list[list[dict]] = [[] for _ in range(len(errors))]
    nonempty = np.flatnonzero(np.diff(offsets))
    if len(nonempty):
        flat = errors.flatten().to_pylist()
        base = offsets[0]
        for i in nonempty:
            out[i] = flat[offsets[i] - base : offsets[i + 1] - base]
    return out


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.value if isinstance(value, Enum) else str(value)


def _isna(value: Any) -> bool:
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def _atomic(path: Path, write: Any) -> None:
    """Write via a temp file in the same folder and os.replace, so a reader never sees half a report."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_table_atomic(table: pa.Table, path: Path) -> None:
    """Any other report file (e.g. audit.parquet), with the same all-or-nothing guarantee."""
    _atomic(Path(path), lambda tmp: pq.write_table(table, tmp))
