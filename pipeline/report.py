"""One run's reconciliation report, written atomically, so finance can account for every sheet row."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.contract import CARRIED_PREFIX, LEDGER_TO_REPORT, REPORT_STATUSES, counted, release_memory
from pipeline.money import exact_sum, format_cents, format_usd

STATUSES = REPORT_STATUSES
NEVER_PLANNED = "never planned: the run stopped before its intent was recorded; run `payout run` on the sheet again"
NEAR_DUPLICATE_NOTE = " (the same once spaces, non-breaking spaces and the comment's letter case are normalised)"
UNKNOWN_NOTE = "outcome unknown: never resent; the next run asks the server again, `payout audit` names the bonus"
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
    "control_total": "Control total",  # the sheet's own total row: checked, never paid (pipeline/totals.py)
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
# What the report needs of every sheet row (assemble_rows' `keyed`); the stages' other columns may be dropped.
SHEET_COLUMNS = ("source_file", "source_row", "row_key", "user_id", "amount_cents")
_INPUT_COLUMNS = ["amount_cents" if f.name == "amount" else f.name for f in ROWS_SCHEMA]


@dataclass(frozen=True)
class Summary:
    """What a run did, in exact cents: the source of summary.json (`as_json`) and of the printed summary."""

    meta: dict[str, Any]  # run_id, batch_id, env, api_url, dry_run, started, finished, duration_s, ...
    rows_total: int
    counts: dict[str, int]
    cents: dict[str, int]
    run_dir: Path | None = None
    reports: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.as_json()[key]

    def as_json(self) -> dict[str, Any]:
        """The summary.json document: amounts as exact decimal text."""
        count, amount = self.counts, self.cents
        doc: dict[str, Any] = dict.fromkeys(
            ("run_id", "batch_id", "env", "api_url", "dry_run", "started", "finished", "duration_s"))
        doc.update(self.meta)
        if doc["duration_s"] is None:
            doc["duration_s"] = _duration_s(doc["started"], doc["finished"])
        doc.update(
            rows_total=self.rows_total,
            counts=dict(count),
            amounts={s: format_cents(amount[s]) for s in STATUSES},
            # As Toloka's operation details count them: items the server paid / refused. Rows never sent
            # (invalid, duplicate, held, already paid) have counts of their own (README "summary.json").
            success_count=count["paid"],
            failed_count=count["failed"],
            pending_count=count["pending"] + count["unknown"],
            invalid_count=count["invalid"],
            duplicate_count=count["duplicate"],
            amount_paid=format_cents(amount["paid"]),
            amount_failed=format_cents(amount["failed"]),
            amount_pending=format_cents(amount["pending"] + amount["unknown"]),
            amount_invalid=format_cents(amount["invalid"]),
        )
        if self.reports:
            doc["reports"] = dict(self.reports)
        return doc


def assemble_rows(run_id: str, keyed: pd.DataFrame, errors: pd.DataFrame, duplicates: pd.DataFrame,
                  already_paid: pd.DataFrame, to_pay: pd.DataFrame, states: pd.DataFrame,
                  planned: pd.DataFrame | None, held: pd.DataFrame | None = None,
                  carried: pd.DataFrame | None = None, totals: pd.DataFrame | None = None) -> pd.DataFrame:
    """One report row per input row, in sheet order, with its status, errors and ids; and the sheets' columns
    payout does not read (`carried`: `sheet:<header>` text columns, indexed like `keyed`), after those.
    `totals`: the sheet's control-total rows, with their `note`."""
    release_memory()  # what the stages before freed
    out = keyed[list(SHEET_COLUMNS)]  # a new frame (copy-on-write)
    out.insert(0, "run_id", run_id)
    n = len(out)
    # Plain object arrays and one hash index of row keys: no per-row Python work on the 1M-row paths.
    status = np.full(n, "invalid", dtype=object)
    note = np.full(n, None, dtype=object)
    operation_id = np.full(n, None, dtype=object)
    bonus_id = np.full(n, None, dtype=object)
    row_errors = np.full(n, None, dtype=object)  # a list only where a row has errors (the report writes [] for None)
    keys_arr = out["row_key"].to_numpy(dtype=object)
    key_index: list[pd.Index] = []

    def positions(sub: pd.DataFrame) -> np.ndarray:
        """Row positions of `sub` in `keyed`: by its index labels (the stages keep them), checked against the row
        keys; by a hash lookup of the keys only if the labels do not line up."""
        keys_sub = sub["row_key"].to_numpy(dtype=object)
        idx = out.index.get_indexer(sub.index) if out.index.is_unique else np.full(len(sub), -1)
        if (idx < 0).any() or not (keys_arr[idx] == keys_sub).all():
            if not key_index:
                key_index.append(pd.Index(keys_arr))
            idx = key_index[0].get_indexer(keys_sub)
            if (idx < 0).any():
                raise KeyError("report rows: a row key not in the sheet")
        return idx

    def add_errors(at: np.ndarray, lists: list[list[dict[str, str]]]) -> None:
        for i, errs in zip(at.tolist(), lists):
            row_errors[i] = (row_errors[i] or []) + errs

    if len(errors):
        err = errors[["source_file", "source_row", "column", "code", "message"]]
        at = np.full(len(err), -1, dtype=np.int64)
        files = out["source_file"].to_numpy(dtype=object)
        lines = out["source_row"].to_numpy(dtype="int64")
        err_files = err["source_file"].to_numpy(dtype=object)
        err_lines = err["source_row"].to_numpy(dtype="int64")
        for f in pd.unique(err_files):  # a few files: one int64 lookup per file, not a 1M-entry tuple index
            in_file = np.flatnonzero(files == f)
            mine = np.flatnonzero(err_files == f)
            found = pd.Index(lines[in_file]).get_indexer(err_lines[mine])
            at[mine] = np.where(found >= 0, in_file[np.maximum(found, 0)], -1)
        if (at < 0).any():
            raise KeyError("report rows: a validation error for a row not in the sheet")
        order = np.argsort(at, kind="stable")
        at_sorted = at[order]
        starts = np.flatnonzero(np.r_[True, at_sorted[1:] != at_sorted[:-1]])
        records = [{"column": c, "code": code, "message": msg} for c, code, msg in zip(
            err["column"].to_numpy(dtype=object)[order], err["code"].to_numpy(dtype=object)[order],
            err["message"].to_numpy(dtype=object)[order])]
        bounds = np.r_[starts, len(order)].tolist()
        add_errors(at_sorted[starts], [records[a:b] for a, b in zip(bounds[:-1], bounds[1:])])

    if len(duplicates):
        idx = positions(duplicates)
        status[idx] = "duplicate"
        note[idx] = ("duplicate of " + duplicates["duplicate_of"].astype(str)).to_numpy(dtype=object)
        if "near_duplicate" in duplicates.columns:  # differs from that row only in what dedupe normalises
            near = idx[duplicates["near_duplicate"].to_numpy(dtype=bool)]
            note[near] = note[near] + NEAR_DUPLICATE_NOTE
    if len(already_paid):
        idx = positions(already_paid)
        status[idx] = "already_paid"
        bonus_id[idx] = already_paid["bonus_id"].to_numpy(dtype=object)
        note[idx] = ("paid by run " + already_paid["run_id"].astype(str)).to_numpy(dtype=object)
    if held is not None and len(held):
        idx = positions(held)
        status[idx] = "held_repeat"
        note[idx] = held["note"].to_numpy(dtype=object)
    if totals is not None and len(totals):
        idx = positions(totals)
        status[idx] = "control_total"
        note[idx] = totals["note"].to_numpy(dtype=object)
    if len(to_pay):
        idx = positions(to_pay)
        if len(states):
            st = to_pay[["row_key"]].merge(states[["row_key", "status", "operation_id", "bonus_id", "errors"]],
                                           on="row_key", how="left")  # keeps to_pay's order
            st_status, st_op, st_bonus, texts = (st[c].to_numpy(dtype=object)
                                                 for c in ("status", "operation_id", "bonus_id", "errors"))
            del st
            mapped = pd.Series(st_status, dtype=object).map(LEDGER_TO_REPORT).to_numpy(dtype=object)
        else:  # the ledger knows none of them (a dry run of a new batch): what the merge would give, no 1M-row join
            st_status = st_op = st_bonus = texts = mapped = np.full(len(to_pay), np.nan, dtype=object)
        never = pd.isna(mapped) if planned is None else np.zeros(len(to_pay), dtype=bool)
        mapped = np.where(never, "pending", mapped)  # planned but no intent: the run stopped first
        status[idx] = mapped
        operation_id[idx] = st_op
        bonus_id[idx] = st_bonus
        with_text = np.flatnonzero(pd.notna(texts))
        if len(with_text):
            add_errors(idx[with_text], [orjson.loads(t) for t in texts[with_text]])
        note[idx[mapped == "unknown"]] = UNKNOWN_NOTE
        note[idx[never]] = NEVER_PLANNED
        if planned is not None and len(planned):  # dry run: what would be sent now (valid rows: no sheet errors)
            at = positions(planned)
            status[at] = "planned"
            operation_id[at] = planned["operation_id"].to_numpy(dtype=object)
            row_errors[at] = None
            note[at] = None
    # object Series: pandas would otherwise convert each column to Arrow strings here, and the report again
    for name, values in (("status", status), ("errors", row_errors), ("operation_id", operation_id),
                         ("bonus_id", bonus_id), ("note", note)):
        out[name] = pd.Series(values, index=out.index, dtype=object)
    if carried is not None and len(carried.columns):
        out = pd.concat([out, carried.reindex(out.index)], axis=1)
    release_memory()
    return out.reset_index(drop=True)


def ledger_rows(run_id: str, rows: pd.DataFrame, states: pd.DataFrame) -> pd.DataFrame:
    """Report rows for rows taken from the ledger alone (`payout retry`): their latest state, in sheet order."""
    out = rows[["source_file", "source_row", "row_key", "user_id", "amount_cents"]].merge(
        states[["row_key", "status", "operation_id", "bonus_id", "errors"]], on="row_key", how="left")
    out.insert(0, "run_id", run_id)
    out["status"] = out["status"].map(LEDGER_TO_REPORT)
    out["errors"] = [orjson.loads(t) if isinstance(t, str) else [] for t in out["errors"]]
    out["note"] = None
    return out[["run_id", "source_file", "source_row", "row_key", "user_id", "amount_cents", "status", "errors",
                "operation_id", "bonus_id", "note"]]


# More files beside the Parquet ones (the CLI adds the HTML page and a dry run's sign-off plan): each gets
# (run_dir, summary, rows, operations) once those are written and returns {name: path} for summary.json's
# `reports`. A hook, so this stage stays free of presentation; a context variable, so a command run in one
# thread (tests run several `main`s at once) never leaves its writers to another.
ExtraWriter = Callable[[Path, Summary, pd.DataFrame, pd.DataFrame], dict[str, str]]
EXTRA_WRITERS: ContextVar[tuple[ExtraWriter, ...]] = ContextVar("payout_extra_writers", default=())


def write_report(out_root: Path, run_id: str, rows: pd.DataFrame, operations: pd.DataFrame, meta: dict) -> Summary:
    """Write OUT/<run_id>/{rows,operations}.parquet and summary.json, each atomically; return the summary.

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
    summary = dataclasses.replace(summarize(rows, {**meta, "run_id": run_id}), run_dir=run_dir,
                                  reports={name: str(path) for name, path in paths.items()})
    _atomic(paths["rows"], lambda tmp: _write_rows(rows, tmp))
    _atomic(paths["operations"], lambda tmp: pq.write_table(ops_table, tmp))
    for extra in EXTRA_WRITERS.get():
        summary.reports.update(extra(run_dir, summary, rows, operations))
    text = json.dumps(summary.as_json(), indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"
    _atomic(paths["summary"], lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return summary


def row_reason(errors: Any, note: Any) -> str:
    """One report row's problems in words (its errors' column and message, then its note): for people's pages."""
    texts = [f"{e.get('column')}: {e.get('message') or e.get('code')}"
             for e in (errors if isinstance(errors, list) else []) if isinstance(e, dict)]
    if isinstance(note, str) and note:
        texts.append(note)
    return "; ".join(texts)


def read_rows(run_dir: Path) -> pd.DataFrame:
    """The rows of a written report, shaped like write_report's input (amount_cents Int64, errors as lists of dicts)."""
    table = pq.read_table(Path(run_dir) / "rows.parquet")
    frame = table.drop(["amount", "errors"]).to_pandas()
    frame["amount_cents"] = _decimal_to_cents(table.column("amount").combine_chunks())
    frame["errors"] = _errors_to_lists(table.column("errors").combine_chunks())
    return frame[_INPUT_COLUMNS]


ROWS_PER_BATCH = 50_000


def _write_rows(rows: pd.DataFrame, path: Path) -> None:
    """rows.parquet converted and written a slice at a time: the Arrow copy of a 1M-row report (~250 MiB) is
    never whole in memory. Same schema and values; one row group per slice.

    Converting a slice needs the GIL (Python objects -> Arrow); encoding and compressing one does not, so a
    writer thread encodes slice k while this thread converts slice k+1 (at most two slices alive)."""
    # row keys are distinct: a dictionary page for them is work thrown away when the writer falls back
    dictionary = [f.name for f in ROWS_SCHEMA if f.name != "row_key"]
    schema = rows_schema(rows)
    with pq.ParquetWriter(path, schema, use_dictionary=dictionary) as writer, ThreadPoolExecutor(1) as pool:
        pending = None
        for start in range(0, max(len(rows), 1), ROWS_PER_BATCH):
            table = rows_to_table(rows.iloc[start:start + ROWS_PER_BATCH])
            if pending is not None:
                pending.result()  # in order, and re-raises a write error here
            pending = pool.submit(writer.write_table, table)
            del table
            release_memory()  # the slice converted before this one, written by now
        if pending is not None:
            pending.result()


def _check_rows(rows: pd.DataFrame) -> None:
    missing = [c for c in _INPUT_COLUMNS if c not in rows.columns]
    if missing:
        raise ValueError(f"report rows lack columns: {', '.join(missing)}")
    bad = set(rows["status"].unique()) - set(STATUSES)
    if bad:
        raise ValueError(f"report rows have unknown statuses: {', '.join(sorted(map(str, bad)))}")


def rows_schema(rows: pd.DataFrame) -> pa.Schema:
    """ROWS_SCHEMA, and a text column for each of the sheets' columns payout does not read (`sheet:<header>`)."""
    extra = [pa.field(str(c), pa.string()) for c in rows.columns if str(c).startswith(CARRIED_PREFIX)]
    return pa.schema(list(ROWS_SCHEMA) + extra) if extra else ROWS_SCHEMA


def rows_to_table(rows: pd.DataFrame) -> pa.Table:
    """Column-wise Arrow conversion of the reconciliation rows to ROWS_SCHEMA (and the carried `sheet:` text
    columns); amounts go cents -> decimal exactly."""
    _check_rows(rows)
    arrays = {
        name: pa.array(rows[name], type=pa.string(), from_pandas=True)
        for name in ("run_id", "source_file", "row_key", "user_id", "status", "operation_id", "bonus_id", "note")
    }
    arrays["source_row"] = pa.array(rows["source_row"].to_numpy(dtype="int64"), type=pa.int64())
    arrays["amount"] = _cents_to_decimal(rows["amount_cents"])
    arrays["errors"] = _errors_to_arrow(rows["errors"])
    schema = rows_schema(rows)
    for f in schema:
        if f.name not in arrays:
            arrays[f.name] = pa.array(rows[f.name], type=pa.string(), from_pandas=True)
    return pa.Table.from_arrays([arrays[f.name] for f in schema], schema=schema)


def operations_to_table(operations: pd.DataFrame) -> pa.Table:
    """One row per operation in OPERATIONS_SCHEMA; a field the operation does not have yet is null."""
    ops = operations.reindex(columns=OPERATIONS_SCHEMA.names)
    arrays = []
    for spec in OPERATIONS_SCHEMA:
        column = ops[spec.name]
        if spec.type == pa.string():
            values = [None if _isna(v) else str(v) for v in column]
            arrays.append(pa.array(values, type=pa.string()))
        else:
            arrays.append(pa.array(column.astype("Int64"), type=pa.int64(), from_pandas=True))
    return pa.Table.from_arrays(arrays, schema=OPERATIONS_SCHEMA)


def summarize(rows: pd.DataFrame, meta: dict) -> Summary:
    """Counts and exact amounts per status, with `meta` (run_id, batch_id, env, dry_run, started, ...).

    `meta["rerun_after"]`, when present, tells format_summary when pending rows can be re-run.
    """
    counts = rows["status"].value_counts()
    # exact Python ints: an int64 sum of cents wraps silently (money.exact_sum); a row without an amount read
    # exactly (NA) counts as nothing
    values = rows["amount_cents"].astype("Int64").to_numpy(dtype="int64", na_value=0)
    at = rows.groupby("status", sort=False).indices
    return Summary(dict(meta), len(rows), {s: int(counts.get(s, 0)) for s in STATUSES},
                   {s: exact_sum(values[at[s]]) if s in at else 0 for s in STATUSES})


def format_summary(summary: Summary) -> str:
    """Plain text for a finance person: rows and amounts per status, what needs attention, where the report is."""
    meta = summary.meta
    head = f"Run {meta.get('run_id')}"
    if meta.get("batch_id"):
        head += f"  batch {meta['batch_id']}"
    if meta.get("api_url") or meta.get("env"):
        head += f"  → {meta.get('api_url') or meta['env']}"
    if meta.get("dry_run"):
        head += "  (dry run: nothing was sent)"
    lines = [head]
    counts = summary.counts
    for status in STATUSES:
        if counts[status]:
            unit = "row " if counts[status] == 1 else "rows"
            lines.append(f"  {LABELS[status]:<13}{counts[status]:>9,} {unit}  {format_usd(summary.cents[status]):>17}")
    lines.append(f"  {'Total':<13}{summary.rows_total:>9,} rows")
    attention = _attention(counts, meta)
    if attention:
        lines.append("Needs attention:")
        lines.extend(f"  {line}" for line in attention)
    elif summary.rows_total:
        lines.append("Nothing needs attention.")
    for notice in meta.get("sheet_notices") or ():
        lines.append(f"Sheet: {notice}")
    if meta.get("superseded"):
        lines.append(f"Note: {counted(meta['superseded'], 'row')} that failed earlier are no longer in the sheet (corrected "
                     "or deleted): superseded, never sent again")
    reports = summary.reports
    recovery = meta.get("recovery")
    if recovery:
        lines.append("Ledger: " + (recovery.get("error") or (
            f"new to this target: read its operations since {recovery['since']} ({recovery['requests']} requests): "
            f"{recovery['operations_new']} operation(s) it did not know, {recovery['rows_paid']:,} row(s) paid, "
            f"{recovery['rows_unknown']:,} of unknown outcome")))
    if "rows" in reports:
        lines.append(f"Report: {reports['rows']}")
    return "\n".join(lines)


def _attention(counts: dict[str, int], meta: dict[str, Any]) -> list[str]:
    out = []
    if counts["invalid"]:
        out.append(f"{counted(counts['invalid'], 'row')} invalid — see the errors column; fix the sheet and run again")
    if counts["failed"]:
        out.append(f"{counted(counts['failed'], 'row')} failed at Toloka, not paid — see the errors column; "
                   "`payout retry` re-sends those with a retryable error")
    if counts["duplicate"]:
        out.append(f"{counted(counts['duplicate'], 'row')} duplicate — see the note column for the row each repeats")
    if counts["pending"]:
        when = f" after {meta['rerun_after']}" if meta.get("rerun_after") else ""
        then = (meta.get("next_step") if not when else None) or f"run `payout run` again{when}; nothing is paid twice"
        out.append(f"{counted(counts['pending'], 'row')} pending — {then}")
    if counts["unknown"]:
        out.append(f"{counted(counts['unknown'], 'row')} of unknown outcome — never re-sent; the next run asks the server again, "
                   "`payout audit` names the bonus")
    if counts["held_repeat"]:
        out.append(f"{counted(counts['held_repeat'], 'row')} held: each looks like a bonus paid under another batch in the "
                   "last days (see the note column); re-run with --allow-repeats if they are meant to be paid again")
    for gap in meta.get("unplanned") or ():
        out.append(f"{counted(gap['rows'], 'row')} of batch {gap['batch_id']!r} never planned: run {gap['run_id']} stopped "
                   "before recording them; run `payout run` on that sheet again (nothing is paid twice)")
    return out



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
    if len(low) and np.abs(low).max() >= 10**12:  # would not fit decimal128(12, 2): never write a wrong amount
        raise ValueError("report rows: an amount beyond 9,999,999,999.99")
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
