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

from pipeline import dedupe, ingest, keys, plan, recover, report, validate, wire
from pipeline.config import Settings
from pipeline.errors import ApiError, ApiUnreachable, AuthRefused, PayoutError, QuotaExhausted, UsageError
from pipeline.execute import ExecutionOutcome, Executor, OperationTimeout, StopRequested
from pipeline.ledger import Ledger, Operation
from pipeline.progress import Progress
from pipeline.signals import StopSignal, stop_on_signals
from pipeline.target import Target, make_client

log = structlog.get_logger("payout.run")

LEDGER_TO_REPORT = {"paid": "paid", "failed": "failed", "planned": "pending", "unknown": "unknown"}
NEEDS_ATTENTION = ("failed", "invalid", "duplicate", "pending", "unknown", "held_repeat")
NEVER_PLANNED = "never planned: the run stopped before its intent was recorded; run `payout run` on the sheet again"

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
    """The sheets' stems, sorted: the order of sheets on the command line does not change the batch."""
    return "+".join(sorted(Path(s).stem for s in sheets))


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
    notes: dict[str, Any] = {}
    with Ledger(settings.ledger_path, lock=not dry_run) as ledger, stop_on_signals() as stop:
        if not dry_run:
            if target is None:
                raise PayoutError("no API target given for a real run")
            if ledger.bind_target(target.ledger_id(settings)):
                try:
                    notes["recovery"] = _recover(ledger, target, settings)
                except ApiError as e:  # nothing sent; the next run recovers first again
                    outcome = ExecutionOutcome(stopped_by=e)
                    notes["recovery"] = {"error": f"could not read the target's operations ({e}); nothing was sent"}
        elif ledger.get_meta("recovered_through") is None:
            notes["recovery"] = {"error": "the ledger has never read this target's operations: a real run does "
                                          "that first"}
        match = _match_ledger(ledger, unique, batch_id)
        keyed = _adopt_keys(keyed, match)
        to_plan = match.to_plan.assign(lookalike=keys.lookalike_keys(match.to_plan))
        held = to_plan.iloc[:0].assign(note=pd.Series([], dtype=object))
        if not settings.allow_repeats:
            since = (datetime.now(timezone.utc) - timedelta(hours=settings.lookalike_window_h)).strftime(
                "%Y-%m-%dT%H:%M:%S.%fZ")
            recent = ledger.recent_lookalikes(to_plan["lookalike"].tolist(), batch_id, since)
            to_plan, held = dedupe.hold_lookalikes(to_plan, recent)
        planned = plan.plan_attempts(to_plan, batch_id, settings.chunk_size)
        errors = _with_reuse_errors(errors, match.reused)
        if not dry_run and outcome is None:
            assert target is not None
            ledger.start_run(run_id, batch_id, "run", {"sheets": [str(s) for s in sheets], "env": settings.env},
                             sheet_rows=len(keyed), to_plan=len(planned))
            notes["superseded"] = ledger.supersede_missing(batch_id, set(keyed["row_key"]), run_id)
            # Intent first: each chunk (rows, items, operation id) is durable before its POST leaves.
            outcome = execute_open_operations(ledger, target, settings, run_id,
                                              record_intents(ledger, run_id, batch_id, planned), len(planned), stop)
        to_pay = pd.concat([planned, match.in_flight, match.unknown]) if len(match.in_flight) + len(
            match.unknown) else planned
        states = ledger.known_rows(to_pay["row_key"].tolist())
        op_ids = sorted(set(states["operation_id"].dropna()) | set(planned["operation_id"]))
        operations = ledger.operations_frame(operation_ids=op_ids)
        rows = assemble_rows(run_id, keyed, errors, duplicates, match.already_paid, to_pay, states,
                             planned if dry_run else None, held)
        meta = _meta(run_id, batch_id, settings, target, dry_run, started_at, started, outcome)
        meta.update({k: v for k, v in notes.items() if v})
        return _close_run(None if dry_run else ledger, settings, rows, operations, meta, outcome)


def _recover(ledger: Ledger, target: Target, settings: Settings) -> dict[str, Any]:
    """A ledger that has never seen its target first learns from the server what it already paid."""
    with make_client(target, settings) as client:
        stats = recover.recover_into(ledger, client, recover.window_start(settings.recover_window_days),
                                     max_wait_s=settings.max_wait_s)
    return vars(stats)


def _match_ledger(ledger: Ledger, unique: pd.DataFrame, batch_id: str) -> dedupe.LedgerMatch:
    """What the ledger knows of each unique row: by its key, or (bonus_key added or dropped) by its content."""
    known = ledger.known_rows(unique["row_key"].tolist())
    recovered = known["batch_id"] == ""
    if ledger.lock and recovered.any():  # (a dry run writes nothing)
        ledger.claim_recovered(batch_id, known.loc[recovered, "row_key"].tolist())
    needs_content = len(unique) and (
        (unique["row_key"] != unique["content_key"]).any() or ledger.batch_has_bonus_keys(batch_id))
    if needs_content:
        missing = ~unique["row_key"].isin(known["row_key"])
        by_content = ledger.rows_by_content(unique.loc[missing, "content_key"].tolist())
    else:
        by_content = known.iloc[:0]
    return dedupe.match_ledger(unique, known, by_content, keys.lookalike_keys)


def _adopt_keys(keyed: pd.DataFrame, match: dedupe.LedgerMatch) -> pd.DataFrame:
    """Report rows carry the key the ledger knows their bonus by (a row matched by content adopts it)."""
    parts = [f["row_key"] for f in (match.to_plan, match.already_paid, match.in_flight, match.unknown, match.reused)]
    adopted = pd.concat(parts)
    changed = adopted[adopted.to_numpy() != keyed.loc[adopted.index, "row_key"].to_numpy()]
    if not len(changed):
        return keyed
    out = keyed.copy(deep=False)
    out["row_key"] = out["row_key"].copy()
    out.loc[changed.index, "row_key"] = changed
    return out


def _with_reuse_errors(errors: pd.DataFrame, reused: pd.DataFrame) -> pd.DataFrame:
    """A reused bonus_key with other content is a row error naming the earlier payment, never `already_paid`."""
    if not len(reused):
        return errors
    extra = pd.DataFrame({"source_file": reused["source_file"].to_numpy(dtype=object),
                          "source_row": reused["source_row"].to_numpy(dtype="int64"), "column": "bonus_key",
                          "code": "bonus_key_reused", "message": reused["message"].to_numpy(dtype=object)})
    return pd.concat([errors, extra], ignore_index=True)


def _close_run(ledger: Ledger | None, settings: Settings, rows: pd.DataFrame, operations: pd.DataFrame,
               meta: dict[str, Any], outcome: ExecutionOutcome | None) -> RunResult:
    """Write the report, derive the exit code from it, and (unless a dry run) record the run's end."""
    run_id = meta["run_id"]
    stopped_by = outcome.stopped_by if outcome else None
    if ledger is not None:
        meta.setdefault("unplanned", [{"run_id": r, "batch_id": b, "rows": n} for r, b, n in ledger.unplanned_runs(
            meta["batch_id"] if meta.get("batch_id") not in (None, "retry") else None)])
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
        items = chunk["item"].tolist() if "item" in chunk.columns else wire.build_items(chunk)
        ledger.record_intent(run_id, batch_id, chunk, items)
        first = chunk.iloc[0]
        yield Operation(str(operation_id), batch_id, run_id, int(first["chunk_no"]), int(first["attempt"]),
                        len(chunk), "planned")


def execute_open_operations(ledger: Ledger, target: Target, settings: Settings, run_id: str,
                            new: Iterable[Operation] = (), new_rows: int = 0,
                            stop: StopSignal | None = None) -> ExecutionOutcome:
    """Finish old work first: every open operation in the ledger is resumed, then the `new` ones are driven."""
    resumed = ledger.open_operations()
    total = sum(op.item_count for op in resumed) + new_rows
    with make_client(target, settings) as client, Progress(total, "paying") as progress:
        executor = Executor(ledger, client, run_id, concurrency=settings.concurrency,
                            poll_initial_s=settings.poll_initial_s, poll_max_s=settings.poll_max_s,
                            max_wait_s=settings.max_wait_s, on_rows_done=progress.advance)
        if stop is not None:
            stop.listen(lambda signum, count: executor.request_stop(
                StopRequested(signum), settings.signal_grace_s if count == 1 else 0))
        log.info("execute_start", resumed_operations=len(resumed), rows=total, stage="execute")
        try:
            try:
                executor.settle_unknown(ledger.operations_with_unknown_rows())
            except PayoutError as e:
                executor.request_stop(e, 0)
            outcome = executor.run(itertools.chain(resumed, new))
        finally:
            if stop is not None:
                stop.listen(None)
        outcome.events.update({f"http_{k}": v for k, v in client.requests_made.items()})
    log.info("execute_done", stage="execute", **outcome.events,
             stopped_by=str(outcome.stopped_by) if outcome.stopped_by else None)
    return outcome


def assemble_rows(run_id: str, keyed: pd.DataFrame, errors: pd.DataFrame, duplicates: pd.DataFrame,
                  already_paid: pd.DataFrame, to_pay: pd.DataFrame, states: pd.DataFrame,
                  planned: pd.DataFrame | None, held: pd.DataFrame | None = None) -> pd.DataFrame:
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
    if held is not None and len(held):
        idx = positions(held)
        status[idx] = "held_repeat"
        note[idx] = held["note"].to_numpy(dtype=object)
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
        note[idx[mapped == "unknown"]] = "outcome unknown: never resent; run `payout audit` to settle it"
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
    return out.reset_index(drop=True)


def exit_code(summary: dict[str, Any], stopped_by: PayoutError | None) -> int:
    """0 all paid · 1 something needs attention · 3 the API stopped us (rows left pending) · 128+N a signal."""
    if isinstance(stopped_by, (AuthRefused, ApiUnreachable, QuotaExhausted, OperationTimeout)):
        return 3
    if stopped_by is not None:
        return stopped_by.exit_code
    counts = summary["counts"]
    if summary.get("unplanned"):
        return 1
    return 1 if any(counts.get(s, 0) for s in NEEDS_ATTENTION) else 0


def _meta(run_id: str, batch_id: str, settings: Settings, target: Target | None, dry_run: bool,
          started_at: datetime, started: float, outcome: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "run_id": run_id, "batch_id": batch_id, "env": settings.env,
        "api_url": (target.label or target.api_url) if target else None, "dry_run": dry_run,
        "data_dir": str(settings.data_dir), "ledger": str(settings.ledger_path),
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

    With `run_id`, only the rows last planned by that run; otherwise every such row in the ledger. Rows the
    batch's latest sheet superseded are never resent; rows a stopped run never planned are named (exit 1).
    """
    retry_id = new_run_id()
    structlog.contextvars.bind_contextvars(run_id=retry_id)
    started, started_at = time.monotonic(), datetime.now(timezone.utc)
    with Ledger(settings.ledger_path) as ledger, stop_on_signals() as stop:
        if run_id is not None and ledger.run_info(run_id) is None:
            raise UsageError(f"no run {run_id} in ledger {settings.ledger_path}")
        ledger.bind_target(target.ledger_id(settings))
        candidates = ledger.rows_frame(run_id=run_id, statuses=("failed", "planned"))
        retryable = candidates[(candidates["status"] == "failed") & (candidates["retryable"] == 1)]
        ledger.start_run(retry_id, None, "retry", {"of_run": run_id}, to_plan=len(retryable))
        parts = [plan.plan_attempts(group.assign(attempt=group["attempt"] + 1), str(batch_id), settings.chunk_size)
                 .assign(batch_id=batch_id) for batch_id, group in retryable.groupby("batch_id", sort=True)]
        intents = itertools.chain.from_iterable(
            record_intents(ledger, retry_id, str(p["batch_id"].iloc[0]), p) for p in parts)
        outcome = execute_open_operations(ledger, target, settings, retry_id, intents, len(retryable), stop)
        touched = candidates[(candidates["status"] != "failed") | (candidates["retryable"] == 1)]
        states = ledger.known_rows(touched["row_key"].tolist())
        rows = touched[["source_file", "source_row", "row_key", "user_id", "amount_cents"]].merge(
            states[["row_key", "status", "operation_id", "bonus_id", "errors"]], on="row_key", how="left")
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
