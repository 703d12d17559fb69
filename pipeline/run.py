"""The one place that composes the stages: sheet -> checked -> unique -> to_pay -> ledger -> API -> report."""

from __future__ import annotations

import itertools
import json
import secrets
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import structlog

from pipeline import dedupe, ingest, keys, plan, report, validate, wire
from pipeline.config import Settings
from pipeline.errors import ApiUnreachable, AuthRefused, PayoutError, QuotaExhausted, UsageError
from pipeline.execute import ExecutionOutcome, Executor
from pipeline.ledger import Ledger, Operation
from pipeline.progress import Progress
from pipeline.toloka import RetryPolicy, TolokaClient

log = structlog.get_logger("payout.run")

LEDGER_TO_REPORT = {"paid": "paid", "failed": "failed", "planned": "pending", "unknown": "unknown"}
NEEDS_ATTENTION = ("failed", "invalid", "duplicate", "pending", "unknown")


@dataclass(frozen=True)
class Target:
    """Where to send: a base URL and its token (the embedded sandbox gets a throwaway one)."""

    api_url: str
    token: str
    label: str | None = None  # how reports name it, e.g. "embedded sandbox (data/sandbox.sqlite)"


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    summary: dict[str, Any]
    exit_code: int
    stopped_by: PayoutError | None = None


def new_run_id() -> str:
    """Sortable by time, unique enough for two runs in the same second."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ") + "-" + secrets.token_hex(2)


def default_batch_id(sheets: Sequence[str | Path]) -> str:
    return "+".join(Path(s).stem for s in sheets)


def make_client(target: Target, settings: Settings) -> TolokaClient:
    retry = RetryPolicy(max_retries=settings.max_retries, base_s=settings.backoff_base_s,
                        max_s=settings.backoff_max_s)
    return TolokaClient(target.api_url, target.token, timeout_s=settings.request_timeout_s, retry=retry,
                        pool_size=settings.concurrency + 2)


def rules_for(settings: Settings) -> validate.ValidationRules:
    return validate.ValidationRules(min_cents=settings.min_amount_cents, max_cents=settings.max_amount_cents)


def run_payout(
    sheets: Sequence[str | Path],
    settings: Settings,
    target: Target | None,
    *,
    batch_id: str | None = None,
    dry_run: bool = False,
    run_id: str | None = None,
) -> RunResult:
    """Pay every valid, unique, not-yet-paid row of the sheets exactly once and write the report."""
    resolved = [Path(s).resolve() for s in sheets]
    if len(set(resolved)) < len(resolved):
        raise UsageError("the same sheet is given twice; each sheet may appear once per run")
    run_id = run_id or new_run_id()
    batch_id = batch_id or default_batch_id(sheets)
    structlog.contextvars.bind_contextvars(run_id=run_id, batch_id=batch_id)
    started = time.monotonic()
    started_at = datetime.now(timezone.utc)

    frame = ingest.read_sheets(sheets)
    checked, errors = validate.validate_rows(frame, rules_for(settings))
    keyed = keys.assign_row_keys(checked, batch_id)
    unique, duplicates = dedupe.find_duplicates(keyed[keyed["is_valid"]], settings.dedupe_policy)
    log.info("sheet_checked", rows=len(keyed), invalid=int((~keyed["is_valid"]).sum()),
             duplicates=len(duplicates), stage="validate")

    outcome = None
    with Ledger(settings.ledger_path, lock=not dry_run) as ledger:
        to_pay, already_paid = dedupe.split_already_paid(unique, ledger.paid_rows(batch_id))
        known = ledger.known_rows(to_pay["row_key"].tolist())
        planned = _plan_new_attempts(to_pay, known, batch_id, settings.chunk_size)
        if not dry_run:
            if target is None:
                raise PayoutError("no API target given for a real run")
            ledger.start_run(run_id, batch_id, "run", {"sheets": [str(s) for s in sheets], "env": settings.env})
            # Intent first: each chunk (rows, items, operation id) is durable before its POST leaves.
            outcome = execute_open_operations(ledger, target, settings, run_id,
                                              record_intents(ledger, run_id, batch_id, planned), len(planned))
        states = ledger.known_rows(to_pay["row_key"].tolist())
        op_ids = sorted(set(states["operation_id"].dropna()) | set(planned["operation_id"]))
        operations = ledger.operations_frame(operation_ids=op_ids)
        rows = assemble_rows(run_id, keyed, errors, duplicates, already_paid, to_pay, states,
                             planned if dry_run else None)
        meta = _meta(run_id, batch_id, settings, target, dry_run, started_at, started, outcome)
        return _close_run(None if dry_run else ledger, settings, rows, operations, meta, outcome)


def _close_run(ledger: Ledger | None, settings: Settings, rows: pd.DataFrame, operations: pd.DataFrame,
               meta: dict[str, Any], outcome: ExecutionOutcome | None) -> RunResult:
    """Write the report, derive the exit code from it, and (unless a dry run) record the run's end."""
    run_id = meta["run_id"]
    stopped_by = outcome.stopped_by if outcome else None
    run_dir = report.write_report(Path(settings.out_dir), run_id, rows, operations, meta)
    summary = json.loads((run_dir / "summary.json").read_text())
    code = exit_code(summary, stopped_by)
    if ledger is not None:
        counts = ", ".join(f"{k} {v}" for k, v in summary["counts"].items() if v)
        ledger.finish_run(run_id, f"exit {code}: {counts}")
    return RunResult(run_id, run_dir, summary, code, stopped_by)


def record_intents(ledger: Ledger, run_id: str, batch_id: str, planned: pd.DataFrame) -> Iterator[Operation]:
    """Commit one chunk's intent (rows, items, operation id), then hand its operation over for sending.

    Each POST therefore follows its own durable intent, and the intent of later chunks is written while the
    first ones are already in flight.
    """
    for operation_id, chunk in planned.groupby("operation_id", sort=False):
        ledger.record_intent(run_id, batch_id, chunk, wire.build_items(chunk))
        first = chunk.iloc[0]
        yield Operation(str(operation_id), batch_id, run_id, int(first["chunk_no"]), int(first["attempt"]),
                        len(chunk), "planned")


def execute_open_operations(ledger: Ledger, target: Target, settings: Settings, run_id: str,
                            new: Iterable[Operation] = (), new_rows: int = 0) -> ExecutionOutcome:
    """Finish old work first: every open operation in the ledger is resumed, then the `new` ones are driven."""
    resumed = ledger.open_operations()
    total = sum(op.item_count for op in resumed) + new_rows
    with make_client(target, settings) as client, Progress(total, "paying") as progress:
        executor = Executor(ledger, client, run_id, concurrency=settings.concurrency,
                            poll_initial_s=settings.poll_initial_s, poll_max_s=settings.poll_max_s,
                            on_rows_done=progress.advance)
        log.info("execute_start", resumed_operations=len(resumed), rows=total, stage="execute")
        outcome = executor.run(itertools.chain(resumed, new))
        outcome.events.update({f"http_{k}": v for k, v in client.requests_made.items()})
    log.info("execute_done", stage="execute", **outcome.events,
             stopped_by=str(outcome.stopped_by) if outcome.stopped_by else None)
    return outcome


def _plan_new_attempts(to_pay: pd.DataFrame, known: pd.DataFrame, batch_id: str, chunk_size: int) -> pd.DataFrame:
    """Plan rows the ledger has never seen (attempt 1) and rows whose last attempt failed (attempt + 1).

    Rows in flight or of unknown outcome are not planned again: they are resumed or left for audit.
    """
    if len(known) == 0:  # a fresh ledger (every dry run of a new batch): all rows are new, no 1M-row merge/take
        status = pd.Series(None, index=range(len(to_pay)), dtype=object)
        attempts = status
    else:
        state = to_pay[["row_key"]].merge(known[["row_key", "status", "attempt"]], on="row_key", how="left")
        status, attempts = state["status"], state["attempt"]
    fresh_mask = status.isna().to_numpy()
    fresh = to_pay if fresh_mask.all() else to_pay[fresh_mask]  # no copy of the whole frame when all are new
    failed_mask = (status == "failed").to_numpy()
    parts = [plan.plan_chunks(fresh, batch_id, chunk_size, attempt=1).assign(attempt=1)] if len(fresh) else []
    if failed_mask.any():
        failed = to_pay[failed_mask].assign(_prev=attempts[failed_mask].astype(int).to_numpy())
        for prev, group in failed.groupby("_prev", sort=True):
            attempt = int(prev) + 1
            parts.append(plan.plan_chunks(group.drop(columns="_prev"), batch_id, chunk_size, attempt=attempt)
                         .assign(attempt=attempt))
    if not parts:
        return to_pay.iloc[:0].assign(chunk_no=pd.Series(dtype="int64"), operation_id=pd.Series(dtype=object),
                                      attempt=pd.Series(dtype="int64"))
    # keeps to_pay's index labels: assemble_rows places planned rows by them; one part needs no concat (a copy)
    return parts[0] if len(parts) == 1 else pd.concat(parts)


def assemble_rows(run_id: str, keyed: pd.DataFrame, errors: pd.DataFrame, duplicates: pd.DataFrame,
                  already_paid: pd.DataFrame, to_pay: pd.DataFrame, states: pd.DataFrame,
                  planned: pd.DataFrame | None) -> pd.DataFrame:
    """One report row per input row, in sheet order, with its status, errors and ids."""
    import numpy as np  # local: this function is the only numpy user in this module
    out = keyed[["source_file", "source_row", "row_key", "user_id", "amount_cents"]]  # a new frame (copy-on-write)
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
    if len(already_paid):
        idx = positions(already_paid)
        status[idx] = "already_paid"
        bonus_id[idx] = already_paid["bonus_id"].to_numpy(dtype=object)
        note[idx] = ("paid by run " + already_paid["run_id"].astype(str)).to_numpy(dtype=object)
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
        status[idx] = mapped
        operation_id[idx] = st_op
        bonus_id[idx] = st_bonus
        with_text = np.flatnonzero(pd.notna(texts))
        if len(with_text):
            add_errors(idx[with_text], [orjson.loads(t) for t in texts[with_text]])
        note[idx[mapped == "unknown"]] = "outcome unknown: never resent; run `payout audit` to settle it"
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
    return out.reset_index(drop=True)


def exit_code(summary: dict[str, Any], stopped_by: PayoutError | None) -> int:
    """0 all paid · 1 something needs attention · 3 the API stopped us (rows left pending)."""
    if isinstance(stopped_by, (AuthRefused, ApiUnreachable, QuotaExhausted)):
        return 3
    if stopped_by is not None:
        return stopped_by.exit_code
    counts = summary["counts"]
    return 1 if any(counts.get(s, 0) for s in NEEDS_ATTENTION) else 0


def _meta(run_id: str, batch_id: str, settings: Settings, target: Target | None, dry_run: bool,
          started_at: datetime, started: float, outcome: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "run_id": run_id, "batch_id": batch_id, "env": settings.env,
        "api_url": (target.label or target.api_url) if target else None, "dry_run": dry_run,
        "started": started_at.isoformat(timespec="seconds"),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - started, 3),
    }
    if outcome is not None:
        meta["api_events"] = outcome.events
        if outcome.stopped_by is not None:
            meta["stopped_by"] = str(outcome.stopped_by)
            retry_after = getattr(outcome.stopped_by, "retry_after", None)
            if retry_after:
                when = datetime.now(timezone.utc) + timedelta(seconds=float(retry_after))
                meta["rerun_after"] = when.isoformat(timespec="minutes")
    return meta


def retry_failed(settings: Settings, target: Target, *, run_id: str | None = None) -> RunResult:
    """Re-submit rows that ended `failed` with a retryable error, and resume pending ones — no sheet needed.

    With `run_id`, only the rows last planned by that run; otherwise every such row in the ledger.
    """
    retry_id = new_run_id()
    structlog.contextvars.bind_contextvars(run_id=retry_id)
    started, started_at = time.monotonic(), datetime.now(timezone.utc)
    with Ledger(settings.ledger_path) as ledger:
        if run_id is not None and ledger.run_info(run_id) is None:
            raise PayoutError(f"no run {run_id} in ledger {settings.ledger_path}")
        candidates = ledger.rows_frame(run_id=run_id, statuses=("failed", "planned"))
        retryable = candidates[(candidates["status"] == "failed") & (candidates["retryable"] == 1)]
        ledger.start_run(retry_id, None, "retry", {"of_run": run_id})
        for (batch_id, prev), group in retryable.groupby(["batch_id", "attempt"], sort=True):
            attempt = int(prev) + 1
            chunks = [group.iloc[i:i + settings.chunk_size] for i in range(0, len(group), settings.chunk_size)]
            planned = pd.concat([
                c.assign(chunk_no=n, attempt=attempt,
                         operation_id=plan.operation_id_for(batch_id, c["row_key"].tolist(), attempt))
                for n, c in enumerate(chunks)], ignore_index=True)
            ledger.record_intent(retry_id, batch_id, planned, planned["item"].tolist())
        outcome = execute_open_operations(ledger, target, settings, retry_id)
        touched = candidates[(candidates["status"] != "failed") | (candidates["retryable"] == 1)]
        states = ledger.known_rows(touched["row_key"].tolist())
        rows = touched[["source_file", "source_row", "row_key", "user_id", "amount_cents"]].merge(
            states, on="row_key", how="left")
        rows.insert(0, "run_id", retry_id)
        rows["status"] = rows["status"].map(LEDGER_TO_REPORT)
        rows["errors"] = [orjson.loads(t) if isinstance(t, str) else [] for t in rows["errors"]]
        rows["note"] = None
        rows = rows[["run_id", "source_file", "source_row", "row_key", "user_id", "amount_cents", "status",
                     "errors", "operation_id", "bonus_id", "note"]]
        operations = ledger.operations_frame(operation_ids=sorted(set(rows["operation_id"].dropna())))
        meta = _meta(retry_id, "retry", settings, target, False, started_at, started, outcome)
        meta["retry_of"] = run_id
        return _close_run(ledger, settings, rows, operations, meta, outcome)
