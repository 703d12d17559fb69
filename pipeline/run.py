"""The one place that composes the stages: sheet -> checked -> unique -> to_pay -> ledger -> API -> report.

`payout run` and `payout retry` share every step after planning: intent, execution, report, exit code.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import structlog

from pipeline import dedupe, guard, ingest, keys, logs, plan, recover, report, totals, validate, wire
from pipeline.config import Settings
from pipeline.contract import NEEDS_ATTENTION, codes_column, new_run_id
from pipeline.errors import ApiError, PayoutError, SpendRefused, StopRequested, UsageError, next_step
from pipeline.execute import ExecutionOutcome, Executor, Intent
from pipeline.ledger import Ledger, Operation
from pipeline.progress import Progress
from pipeline.signals import StopSignal, stop_on_signals
from pipeline.target import Target, make_client

log = structlog.get_logger("payout.run")


@dataclass(frozen=True)
class RunResult:
    run_id: str
    run_dir: Path
    summary: report.Summary
    exit_code: int
    stopped_by: PayoutError | None = None


def run_payout(sheets: Sequence[str | Path], settings: Settings, target: Target | None, *, batch_id: str,
               dry_run: bool = False, confirm_cents: int | None = None) -> RunResult:
    """Pay every valid, unique, not-yet-paid row of the sheets exactly once and write the report.

    `confirm_cents` (--confirm-total): the total a person confirmed; the spend guard checks the plan against
    it and the configured caps before anything is recorded (SpendRefused: exit 2, nothing sent)."""
    if len({Path(s).resolve() for s in sheets}) < len(sheets):
        raise UsageError("the same sheet is given twice; each sheet may appear once per run")
    run_id, started = new_run_id(), time.monotonic()
    structlog.contextvars.bind_contextvars(run_id=run_id, batch_id=batch_id)
    notices: list[str] = []
    # the sheets' columns payout does not read go straight to the report, past the stages
    sheet, carried = ingest.carried_columns(ingest.read_sheets(sheets, settings.sheet_options(), notices))
    rules = validate.ValidationRules(min_cents=settings.min_amount_cents, max_cents=settings.max_amount_cents,
                                     decimal_comma=settings.decimal_comma, max_cell_chars=settings.max_cell_chars)
    checked, errors = validate.validate_rows(sheet, rules)
    del sheet
    keyed = keys.assign_row_keys(checked, batch_id)
    del checked
    keyed, errors, controls = totals.check_totals(keyed, errors)  # a total that disagrees: exit 2, nothing sent
    unique, duplicates = dedupe.find_duplicates(keyed[keyed["is_valid"]], settings.dedupe_policy)
    log.info("sheet_checked", rows=len(keyed), invalid=int((~keyed["is_valid"]).sum()),
             duplicates=len(duplicates), stage="validate")
    keyed = keyed[list(report.SHEET_COLUMNS)]  # all the report needs of every row: the texts live on in `unique`
    meta: dict[str, Any] = {"batch_id": batch_id, "dry_run": dry_run, "sheet_notices": notices}
    outcome = None
    with Ledger(settings.ledger, lock=not dry_run) as ledger, stop_on_signals() as stop:
        if not dry_run:  # PostgreSQL: one planner at a time, until `execute` has written the whole plan
            ledger.hold_planning_lock()
        if target is not None and not dry_run and ledger.bind_target(target.ledger_id(settings)):
            try:  # a ledger new to its target first learns from the server what it already paid
                with make_client(target, settings) as client:
                    meta["recovery"] = vars(recover.recover_into(
                        ledger, client, recover.window_start(settings.recover_window_days),
                        max_wait_s=settings.max_wait_s))
            except ApiError as e:  # nothing sent; the next run recovers first again
                outcome = ExecutionOutcome(stopped_by=e)
                meta["recovery"] = {"error": f"could not read the target's operations ({e}); nothing was sent"}
        elif dry_run and ledger.get_meta("recovered_through") is None:
            meta["recovery"] = {"error": "this ledger has never read its target's operations: a real run does that "
                                         "first, and may find some of these rows already paid"}
        match = _match_ledger(ledger, unique, batch_id)
        keyed = match.adopt_keys(keyed)
        to_plan, held = _hold_lookalikes(ledger, match.to_plan, batch_id, settings)
        planned = plan.plan_attempts(to_plan, batch_id, settings.chunk_size)
        verdict = spend_verdict(planned, match.in_flight, settings, confirm_cents, match.already_paid)
        meta["spend_guard"] = verdict.as_json()
        if verdict.refused and not dry_run and outcome is None:
            raise SpendRefused(verdict.message + "; nothing was recorded or sent")
        if not dry_run and outcome is None:
            if target is None:
                raise PayoutError("no API target given for a real run")
            ledger.start_run(run_id, batch_id, "run", {"sheets": [str(s) for s in sheets], "env": settings.env},
                             sheet_rows=len(keyed), to_plan=len(planned))
            if superseded := ledger.supersede_missing(batch_id, set(keyed["row_key"]), run_id):
                meta["superseded"] = superseded
            outcome = execute(ledger, target, settings, run_id, record_intents(ledger, run_id, batch_id, planned),
                              len(planned), stop)
        to_report = match.to_report(planned)
        states = ledger.known_rows(to_report["row_key"].tolist())
        rows = report.assemble_rows(run_id, keyed, match.with_reuse_errors(errors), duplicates,
                                    match.already_paid, to_report, states, planned if dry_run else None, held,
                                    carried=carried, totals=controls[["row_key", "note"]])
        return finish(ledger, settings, target, run_id, rows, states, planned, meta, outcome, started)


def retry_failed(settings: Settings, target: Target, *, run_id: str | None = None) -> RunResult:
    """Re-submit rows whose last attempt failed with a retryable error, and resume pending ones — no sheet.

    The same rule as `payout run`: a validation refusal is not resent. With `run_id`, only the rows last
    planned by that run. Superseded rows are never resent; rows a stopped run never planned are named (exit 1).
    """
    retry_id, started = new_run_id(), time.monotonic()
    structlog.contextvars.bind_contextvars(run_id=retry_id)
    with Ledger(settings.ledger) as ledger, stop_on_signals() as stop:
        ledger.hold_planning_lock()  # PostgreSQL: one planner at a time (released by `execute`)
        if run_id is not None and ledger.run_info(run_id) is None:
            raise UsageError(f"no run {run_id} in ledger {settings.ledger_label}")
        ledger.bind_target(target.ledger_id(settings))
        candidates = ledger.rows_frame(run_id=run_id, statuses=("failed", "planned"))
        touched = candidates[(candidates["status"] != "failed") | (candidates["retryable"] == 1)]
        retryable = touched[touched["status"] == "failed"]
        ledger.start_run(retry_id, None, "retry", {"of_run": run_id}, to_plan=len(retryable))
        parts = plan.plan_retry(retryable, settings.chunk_size)
        outcome = execute(ledger, target, settings, retry_id, itertools.chain.from_iterable(
            record_intents(ledger, retry_id, str(p["batch_id"].iloc[0]), p) for p in parts), len(retryable), stop)
        states = ledger.known_rows(touched["row_key"].tolist())
        rows = report.ledger_rows(retry_id, touched, states)
        planned = pd.concat(parts) if parts else retryable.assign(operation_id=None)
        meta = {"batch_id": None, "dry_run": False, "retry_of": run_id}  # every batch with retryable rows
        return finish(ledger, settings, target, retry_id, rows, states, planned, meta, outcome, started)


def record_intents(ledger: Ledger, run_id: str, batch_id: str, planned: pd.DataFrame
                   ) -> Iterator[Operation | Intent]:
    """Commit one chunk's intent (rows, items, operation id), then hand its operation over for sending.

    Each POST therefore follows its own durable intent; the executor pulls the next chunk only when a sender
    is about to need it, so a stopped run leaves the rest unplanned (and says so). Items built here travel
    with their operation (`Intent`) when the ledger took every row as given; else the executor reads them back.
    """
    for operation_id, chunk in planned.groupby("operation_id", sort=False):
        built = "item" not in chunk.columns
        items = wire.build_items(chunk) if built else chunk["item"].tolist()
        if "lookalike" not in chunk.columns:  # stored with the intent: the guard of later batches
            chunk = chunk.assign(lookalike=keys.lookalike_keys(chunk))
        written = ledger.record_intent(run_id, batch_id, chunk, items)
        first = chunk.iloc[0]
        op = Operation(str(operation_id), batch_id, run_id, int(first["chunk_no"]), int(first["attempt"]),
                       len(chunk), "planned")
        yield _intent(op, chunk, items) if built and written == len(chunk) else op


def _intent(op: Operation, chunk: pd.DataFrame, items: list[bytes]) -> Intent | Operation:
    """The operation with its rows in the ledger's order (`Ledger.rows_of_operation`: source file, source row,
    row key) and what each pays; the bare operation (rows read back) when a source is unknown."""
    keys_, files, lines = chunk["row_key"].tolist(), chunk["source_file"].tolist(), chunk["source_row"].tolist()
    if not all(isinstance(f, str) for f in files) or not all(isinstance(n, int) for n in lines):
        return op
    order = sorted(zip(files, lines, keys_, range(len(keys_))))  # already in this order as a rule: ~linear
    pays = dict(zip(keys_, zip(chunk["user_id"].tolist(), chunk["amount_cents"].astype(int).tolist())))
    return Intent(op, [(key, items[i]) for _, _, key, i in order], pays)


def execute(ledger: Ledger, target: Target, settings: Settings, run_id: str, new: Iterable[Operation | Intent] = (),
            new_rows: int = 0, stop: StopSignal | None = None) -> ExecutionOutcome:
    """Settle rows of unknown outcome, resume every open operation, then drive the `new` ones.

    A shared (PostgreSQL) ledger: the whole plan is written now, under the planning lock, and then this run is
    one worker among those on the ledger: it claims open operations one at a time (see `Ledger.claims`).
    """
    if ledger.shared:
        new_rows = 0
        for op in new:  # writes each intent; the next planner finds them. A signal: no further intent
            new_rows += (op.operation if isinstance(op, Intent) else op).item_count
            if stop is not None and stop.signum is not None:
                break
        new = ()
        ledger.release_planning_lock()
    resumed = ledger.open_operations()
    total = sum(op.item_count for op in resumed) + (0 if ledger.shared else new_rows)
    with make_client(target, settings) as client, Progress(total, "paying") as progress:
        executor = Executor(ledger, client, run_id, concurrency=settings.concurrency,
                            poll_initial_s=settings.poll_initial_s, poll_max_s=settings.poll_max_s,
                            max_wait_s=settings.max_wait_s, on_rows_done=progress.advance)
        if stop is not None:
            stop.listen(lambda signum, count: executor.request_stop(
                StopRequested(signum), settings.signal_grace_s if count == 1 else 0))
        log.info("execute_start", resumed_operations=len(resumed), rows=total, stage="execute")
        work = (ledger.claims(run_id, settings.claim_lease_s, busy_limit=executor.concurrency,
                              stopping=executor.stopping)
                if ledger.shared else itertools.chain(resumed, new))
        try:
            with ledger.keeping_claims(run_id, settings.claim_lease_s):
                outcome = executor.run(progress.sending(work), settle=ledger.operations_with_unknown_rows())
        finally:
            if stop is not None:
                stop.listen(None)
        outcome.events.update({f"http_{k}": v for k, v in client.requests_made.items()})
    log.info("execute_done", stage="execute", **outcome.events,
             stopped_by=str(outcome.stopped_by) if outcome.stopped_by else None)
    return outcome


def finish(ledger: Ledger, settings: Settings, target: Target | None, run_id: str, rows: pd.DataFrame,
           states: pd.DataFrame, planned: pd.DataFrame, meta: dict[str, Any], outcome: ExecutionOutcome | None,
           started: float) -> RunResult:
    """Write the report, derive the exit code from it and the error that stopped the run, record the run's end."""
    dry_run = bool(meta.get("dry_run"))
    meta.update(_meta(settings, target, outcome, started))
    if not dry_run and (gaps := ledger.unplanned_runs(meta.get("batch_id"))):
        meta["unplanned"] = [{"run_id": r, "batch_id": b, "rows": n} for r, b, n in gaps]
    op_ids = sorted(set(states["operation_id"].dropna()) | set(planned["operation_id"].dropna()))
    summary = report.write_report(Path(settings.out_dir), run_id, rows, ledger.operations_frame(operation_ids=op_ids),
                                  meta)
    stopped_by = outcome.stopped_by if outcome else None
    attention = meta.get("unplanned") or any(summary.counts.get(s, 0) for s in NEEDS_ATTENTION)
    code = stopped_by.exit_code if stopped_by is not None else 1 if attention else 0
    if not dry_run:
        ledger.finish_run(run_id, f"exit {code}: " + ", ".join(f"{k} {v}" for k, v in summary.counts.items() if v))
    assert summary.run_dir is not None
    return RunResult(run_id, summary.run_dir, summary, code, stopped_by)


def spend_verdict(planned: pd.DataFrame, in_flight: pd.DataFrame, settings: Settings,
                  confirm_cents: int | None, already_paid: pd.DataFrame) -> guard.Verdict:
    """The spend guard's verdict on the money this run may move: the rows it plans now and the sheet's rows
    already in flight (intent recorded, outcome unknown: this run resumes them), so the same command run again
    after a stop is judged on the same rows until some of them are settled."""
    columns = ["user_id", "amount_cents"]
    if all(codes_column("user_id") in f.columns for f in (planned, in_flight)):  # one numbering: the sheet's
        columns.append(codes_column("user_id"))
    parts = [f[columns] for f in (planned, in_flight) if len(f)]
    rows = pd.concat(parts) if parts else planned.reindex(columns=columns)
    limits = guard.SpendLimits(settings.max_run_cents, settings.max_user_run_cents, settings.confirm_above_cents,
                               confirm_cents)
    settled = (len(already_paid), int(already_paid["amount_cents"].astype("int64").sum()) if len(already_paid) else 0)
    return guard.check(rows, limits, settled=settled)


def _match_ledger(ledger: Ledger, unique: pd.DataFrame, batch_id: str) -> dedupe.LedgerMatch:
    """What the ledger knows of each unique row: by its key, or (bonus_key added or dropped) by its content."""
    known = ledger.known_rows(unique["row_key"].tolist())
    recovered = known["batch_id"] == ""
    if ledger.lock and recovered.any():  # (a dry run writes nothing)
        ledger.claim_recovered(batch_id, known.loc[recovered, "row_key"].tolist())
    by_content = known.iloc[:0]
    if len(unique) and ((unique["row_key"] != unique["content_key"]).any() or ledger.batch_has_bonus_keys(batch_id)):
        missing = ~unique["row_key"].isin(known["row_key"])
        by_content = ledger.rows_by_content(unique.loc[missing, "content_key"].tolist())
    return dedupe.match_ledger(unique, known, by_content, keys.lookalike_keys)


def _hold_lookalikes(ledger: Ledger, to_plan: pd.DataFrame, batch_id: str, settings: Settings
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(to_plan, held): look-alikes of recent payments under other batches are held. The look-alike keys are
    computed here only when another batch paid within the window; otherwise per chunk, with its intent."""
    since = (datetime.now(UTC) - timedelta(hours=settings.lookalike_window_h)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if settings.allow_repeats or not len(to_plan) or not ledger.other_batches_since(batch_id, since):
        return to_plan, to_plan.iloc[:0].assign(note=pd.Series([], dtype=object))
    to_plan = to_plan.assign(lookalike=keys.lookalike_keys(to_plan))
    return dedupe.hold_lookalikes(to_plan, ledger.recent_lookalikes(to_plan["lookalike"].tolist(), batch_id, since))


def _meta(settings: Settings, target: Target | None, outcome: ExecutionOutcome | None, started: float
          ) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "env": settings.env, "api_url": (target.label or target.api_url) if target else None,
        "data_dir": str(settings.data_dir), "ledger": settings.ledger_label,
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - started, 3),
    }
    meta["started"] = (datetime.now(UTC) - timedelta(seconds=meta["duration_s"])).isoformat(
        timespec="seconds")
    if outcome is not None:
        meta["api_events"] = outcome.events
        if outcome.stopped_by is not None:
            meta["stopped_by"] = logs.scrub(str(outcome.stopped_by))
            meta["next_step"] = next_step(outcome.stopped_by)
            retry_after = outcome.stopped_by.retry_after if isinstance(outcome.stopped_by, ApiError) else None
            if retry_after:
                when = datetime.now(UTC) + timedelta(seconds=float(retry_after))
                meta["rerun_after"] = when.isoformat(timespec="minutes")
    return meta
