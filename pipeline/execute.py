"""Submit planned operations and poll them to completion, a bounded number in flight at once.

The safety argument, step by step (see README "Exactly once"):
- a POST is only ever sent with the operation id already committed in the ledger;
- after any doubt (timeout, reset, 5xx) we ask the server by operation id before sending again, and a
  resend reuses the same id, so the server's OPERATION_ALREADY_EXISTS makes it harmless;
- each row's fate comes from the operation log (`__item_idx` = row key), written in one transaction;
- a row counts as paid only when its log entry carries a bonus id AND the user and amount we sent for that
  `__item_idx`; anything not definitive (success without an id, a mismatch, an entry missing from the log, a
  log we cannot read) is recorded `unknown` and never resent under a new id;
- waiting is bounded: `max_wait_s` per operation, every request by the client's deadline, and a stop request
  (SIGTERM/SIGINT) ends sending at once and polling after a grace period, leaving open operations to resume.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson
import structlog

from pipeline.errors import (
    ApiError,
    ApiRejectedError,
    ApiTransientError,
    ApiUnreachable,
    AuthRefused,
    OperationTimeout,
    PayoutError,
    QuotaExhausted,
    StopRequested,
)
from pipeline.ledger import Ledger, Operation, RowResult
from pipeline.toloka import LogEntry, TolokaClient
from pipeline.wire import body_for

log = structlog.get_logger("payout.execute")

TERMINAL = ("SUCCESS", "FAIL")
LOOKAHEAD = 2  # operations whose intent may be committed per sender before one of them finishes
# Item errors worth another attempt with the same data; validation codes (VALUE_*, ENTITY_*) are not.
RETRYABLE_ITEM_CODES = frozenset({"INTERNAL_ERROR", "OPERATION_EXECUTION_ERROR", "REMOTE_SERVICE_UNAVAILABLE",
                                  "NOT_ENOUGH_BALANCE", "TOO_MANY_REQUESTS", "NOT_IN_LOG"})


@dataclass(frozen=True)
class Intent:
    """An operation whose intent this run has just committed, handed to the executor with what it carries, so
    nothing is read back before sending: `rows` (row key, item JSON) in the ledger's order, and `pays`, each
    row's (user id, cents) from which its item was built, what its log entry must show to count as paid."""

    operation: Operation
    rows: list[tuple[str, bytes]]
    pays: dict[str, tuple[str, int]]


class _Abandoned(Exception):
    """Polling stopped (a stop request's grace is over): the operation stays open in the ledger."""


@dataclass
class ExecutionOutcome:
    """How execution ended; `stopped_by` is the error that made us stop early, if any."""

    operations_done: int = 0
    stopped_by: PayoutError | None = None
    events: dict[str, int] = field(default_factory=dict)


class Executor:
    """Drives operations through submit → poll → log → ledger, `concurrency` of them at a time."""

    def __init__(
        self,
        ledger: Ledger,
        client: TolokaClient,
        run_id: str,
        *,
        concurrency: int = 4,
        poll_initial_s: float = 0.05,
        poll_max_s: float = 2.0,
        max_wait_s: float = 1800.0,
        on_rows_done: Callable[[int], None] = lambda n: None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.ledger = ledger
        self.client = client
        self.run_id = run_id
        self.concurrency = max(1, concurrency)
        self.poll_initial_s = poll_initial_s
        self.poll_max_s = poll_max_s
        self.max_wait_s = max_wait_s
        self.on_rows_done = on_rows_done
        self._stop = threading.Event()  # no new POST, no new operation
        self._quit = threading.Event()  # stop polling too
        self._sleep = sleep or self._quit.wait  # a stop wakes every sleeper at once
        self._lock = threading.Lock()
        self._outcome = ExecutionOutcome()

    def stopping(self) -> bool:
        """True once no new operation may start (a stop request, or an error that ends the run)."""
        return self._stop.is_set()

    def request_stop(self, reason: PayoutError, grace_s: float) -> None:
        """Stop sending now; keep polling what is in flight for `grace_s` seconds (0: stop polling now)."""
        with self._lock:
            if self._outcome.stopped_by is None or isinstance(reason, StopRequested):
                self._outcome.stopped_by = reason
        self._stop.set()
        if grace_s <= 0:
            self._quit.set()
        else:
            timer = threading.Timer(grace_s, self._quit.set)
            timer.daemon = True  # never keeps a finished run's process alive
            timer.start()

    def run(self, operations: Iterable[Operation | Intent], settle: Iterable[str] = ()) -> ExecutionOutcome:
        """Settle rows of unknown outcome (`settle`: their operations), then drive every operation to a recorded
        outcome, or stop cleanly on quota / unreachable API / a signal.

        `operations` may be a generator that commits each operation's intent before yielding it (an `Intent`,
        or the `Operation` alone when its rows are to be read from the ledger): workers
        start on the first ones while later intent is still being written; after a stop no further intent
        is written (the run then records rows it never planned).
        """
        try:
            self.settle_unknown(settle)
        except PayoutError as e:
            self.request_stop(e, 0)
        ahead = threading.Semaphore(self.concurrency * LOOKAHEAD)  # intent is written just ahead of sending

        def drive(op: Operation | Intent) -> None:
            try:
                self._drive(op)
            except PayoutError:
                self._stop.set()  # no further intent or POST; the error is collected below
                raise
            finally:
                ahead.release()

        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="op") as pool:
            futures = []
            iterator = iter(operations)
            while True:
                while not ahead.acquire(timeout=0.5):
                    if self._stop.is_set():
                        break
                if self._stop.is_set():
                    break
                op = next(iterator, None)
                if op is None:
                    break
                futures.append(pool.submit(drive, op))
            for fut in as_completed(futures):
                try:
                    fut.result()
                except PayoutError as e:
                    self._stop.set()
                    with self._lock:
                        if self._outcome.stopped_by is None or isinstance(e, AuthRefused):
                            self._outcome.stopped_by = e
        self._quit.set()  # releases a pending grace timer's sleepers; every worker has returned
        return self._outcome

    def settle_unknown(self, operation_ids: Iterable[str]) -> None:
        """Ask the server again about rows of unknown outcome: a definitive log now settles them.

        A broken answer (success without an id, a log that did not match what was sent, an empty log) left them
        unknown; an honest reading of the same finished operation says paid or refused. Never a POST.
        """
        for operation_id in operation_ids:
            if self._stop.is_set():
                return
            rows = self.ledger.rows_of_operation(operation_id, "unknown")
            try:
                remote = self.client.get_operation(operation_id)
                if remote is None or remote.get("status") not in TERMINAL:
                    continue
                entries = self.client.get_operation_log_entries(operation_id)
            except (ApiRejectedError, ApiTransientError) as e:
                if isinstance(e, (AuthRefused, QuotaExhausted, ApiUnreachable)):
                    raise
                continue  # still not definitive: the rows stay unknown
            settled = self.ledger.settle_unknown(operation_id, remote, map_log(rows, remote.get("status"), entries),
                                                 self.run_id)
            if settled:
                self._event("unknown_settled")
                log.info("unknown_rows_settled", operation_id=operation_id, rows=settled)

    def _event(self, name: str) -> None:
        with self._lock:
            self._outcome.events[name] = self._outcome.events.get(name, 0) + 1

    # -- one operation ----------------------------------------------------------------------------

    def _drive(self, planned: Operation | Intent) -> None:
        if self._stop.is_set():
            return
        if isinstance(planned, Intent):
            op, rows, pays = planned.operation, planned.rows, planned.pays
        else:
            op, rows, pays = planned, self.ledger.rows_of_operation(planned.operation_id), None
        remote = self._ensure_submitted(op, rows)
        try:
            while remote is not None and remote.get("status") not in TERMINAL:
                remote = self._wait(op)
                if remote is None:  # the server forgot it: resubmit under the same id
                    self._event("op_lost_resubmitted")
                    remote = self._ensure_submitted(op, rows, known_missing=True)
        except _Abandoned:
            self._event("left_open")
            return
        if remote is not None:
            self._resolve(op, remote, rows, pays)
        with self._lock:
            self._outcome.operations_done += 1

    def _ensure_submitted(self, op: Operation, rows: list[tuple[str, bytes]], known_missing: bool = False
                          ) -> dict[str, Any] | None:
        """Return the server's view of the operation, POSTing (same id, always) only when it is absent.

        Every doubt (no answer, a 5xx, an answer we cannot trust, "already exists" that the server then cannot
        find) is followed by a look-up; only a definite "absent" allows the POST again, after a backed-off
        pause. After `max_retries` doubts the run stops and the operation stays open for the next run.
        """
        resumed = op.state == "submitted" or op.run_id != self.run_id
        must_ask = resumed and not known_missing
        remote: dict[str, Any] | None
        body: bytes | None = None
        doubt: ApiError | None = None
        attempt = 0
        while not self._stop.is_set():
            if not must_ask:
                try:
                    body = body or body_for(rows)
                    remote = self.client.create_bonuses_async(body, op.operation_id)
                    self.ledger.mark_submitted(op.operation_id, remote)
                    self._event("submitted")
                    return remote
                except (QuotaExhausted, AuthRefused):
                    raise
                except ApiRejectedError as e:
                    if e.code != "OPERATION_ALREADY_EXISTS":
                        self._reject(op, rows, e)
                        return None
                    self._event("already_exists")  # an earlier attempt reached the server: read it
                    doubt = e
                except ApiTransientError as e:
                    self._event("submit_doubt")  # the server may have created it: ask before sending again
                    doubt = e
            try:
                remote = self.client.get_operation(op.operation_id)
            except ApiUnreachable:
                raise
            except ApiTransientError as e:  # no trustworthy answer: ask again later, never POST on a doubt
                remote, must_ask, doubt = None, True, e
            else:
                if remote is not None:
                    self.ledger.mark_submitted(op.operation_id, remote)
                    return remote
                must_ask = False  # the server says it has never heard of it: the POST may go (same id)
                if resumed and doubt is None:
                    log.warning("operation_missing_on_server", operation_id=op.operation_id)
                    continue
            log.info("submit_uncertain", operation_id=op.operation_id, error=str(doubt), attempt=attempt)
            if attempt >= self.client.retry.max_retries:
                raise ApiUnreachable(f"could not submit operation {op.operation_id}: {doubt}") from doubt
            self._sleep(self.client.retry.delay(attempt, doubt.retry_after if doubt else None))
            attempt += 1
        return None

    def _wait(self, op: Operation) -> dict[str, Any] | None:
        """Poll with growing intervals until SUCCESS or FAIL (or unknown to the server), at most `max_wait_s`."""
        delay = self.poll_initial_s
        give_up = time.monotonic() + self.max_wait_s
        while True:
            self._sleep(delay)
            if self._quit.is_set():
                raise _Abandoned
            if time.monotonic() > give_up:
                raise OperationTimeout(f"operation {op.operation_id} did not finish within {self.max_wait_s:g} s; "
                                       "its rows stay pending: run again later to resume it (nothing is resent)")
            remote = self.client.get_operation(op.operation_id)
            if remote is None or remote.get("status") in TERMINAL:
                return remote
            delay = min(delay * 1.5, self.poll_max_s)  # (x2 found a finished operation up to ~half its time late)

    def _reject(self, op: Operation, rows: list[tuple[str, bytes]], e: ApiRejectedError) -> None:
        """A definite refusal of the whole request: nothing was created; record why, per row where known."""
        self._event("rejected")
        per_index = e.payload if e.code == "VALIDATION_ERROR" and isinstance(e.payload, dict) else {}
        results = []
        for i, (key, _) in enumerate(rows):
            fields = per_index.get(str(i))
            errors = _field_errors(fields) if isinstance(fields, dict) else [
                {"column": "", "code": e.code or f"HTTP_{e.status}", "message": str(e)}]
            results.append(RowResult(key, "failed", errors=errors, retryable=e.status == 413))
        log.warning("operation_rejected", operation_id=op.operation_id, status=e.status, code=e.code)
        self.ledger.record_outcome(op.operation_id, None, results, self.run_id)
        self.on_rows_done(len(rows))

    def _resolve(self, op: Operation, remote: dict[str, Any], rows: list[tuple[str, bytes]],
                 pays: dict[str, tuple[str, int]] | None = None) -> None:
        """Map every log entry back to its row by `__item_idx` and record all results at once."""
        try:
            entries: list[LogEntry] | list[dict[str, Any]] | None = self.client.get_operation_log_entries(
                op.operation_id)
        except ApiRejectedError as e:
            # The log is gone for good (archived or lost): items may be paid. Never resend blind.
            log.error("operation_log_unavailable", operation_id=op.operation_id, code=e.code, error=str(e))
            entries = None
        # (an answer we cannot trust, ApiUnexpectedAnswer, propagates: the run stops, the operation stays open
        # and the next run reads its log again)
        results = map_log(rows, remote.get("status"), entries, pays)
        self.ledger.record_outcome(op.operation_id, remote, results, self.run_id)
        self._event(f"op_{str(remote.get('status')).lower()}")
        unknown = sum(r.status == "unknown" for r in results)
        if unknown:
            self._event("rows_unknown")
            log.error("outcome_not_definitive", operation_id=op.operation_id, rows=unknown)
        self.on_rows_done(len(rows))


def map_log(rows: Sequence[tuple[str, bytes]], status: str | None,
            entries: Sequence[dict[str, Any] | LogEntry] | None,
            pays: Mapping[str, tuple[str, int]] | None = None) -> list[RowResult]:
    """One result per sent row (row key, item JSON as sent) from the operation log.

    Paid only with a bonus id and the user and amount we sent; refused only with an explicit failure entry
    for what we sent. Anything else is `unknown`: never resent, settled by asking the server (audit).
    `entries`: the log as JSON objects or as `LogEntry`s (the same fields, decoded alone). `pays`: each row's
    (user id, cents) its item was built from, compared without parsing the items again.
    """
    items = {key: item for key, item in rows} if pays is None else {}
    sent: Mapping[str, object] = pays if pays is not None else items
    seen: dict[str, RowResult] = {}
    for entry in entries or ():
        if isinstance(entry, LogEntry):
            echo = entry.input
            if echo is None:
                continue
            key, user, amount, success, output = echo.item_idx, echo.user_id, echo.amount, entry.success, entry.output
        elif isinstance(entry, dict) and isinstance(echoed := entry.get("input"), dict):
            key, user, amount = echoed.get("__item_idx"), echoed.get("user_id"), echoed.get("amount")
            success, output = entry.get("success"), entry.get("output")
        else:
            continue
        if not isinstance(key, str) or key not in sent or key in seen and seen[key].status == "paid":
            continue
        if not isinstance(output, dict):
            output = {}
        mismatch = _differs(*pays[key], user, amount) if pays is not None else _mismatch(items[key], user, amount)
        if mismatch:
            seen[key] = _unknown(key, "LOG_MISMATCH", f"the operation log shows {mismatch}")
        elif success is True:
            bonus_id = output.get("user_bonus_id")
            seen[key] = (RowResult(key, "paid", bonus_id=str(bonus_id)) if bonus_id not in (None, "") else
                         _unknown(key, "NO_BONUS_ID", "the log says success but names no bonus id"))
        elif success is False:
            errors = _field_errors(output)
            seen[key] = RowResult(key, "failed", errors=errors,
                                  retryable=any(e["code"] in RETRYABLE_ITEM_CODES for e in errors))
        else:
            seen[key] = _unknown(key, "UNREADABLE_LOG_ENTRY", "the log entry says neither success nor failure")
    why = ("the operation log could not be read" if entries is None else
           f"the operation ended {status} without a log entry for this row")
    return [seen.get(k) or _unknown(k, "NOT_IN_LOG", why) for k, _ in rows]


def _unknown(key: str, code: str, message: str) -> RowResult:
    return RowResult(key, "unknown", errors=[{"column": "", "code": code,
                                              "message": message + "; never resent: `payout audit` settles it"}])


def _mismatch(sent: bytes, user: Any, amount: Any) -> str | None:
    """How the log's echo of an item (its user and amount) differs from what we sent (None when it matches)."""
    item = orjson.loads(sent)
    if user != item.get("user_id"):
        return f"user {user!r} where we sent {item.get('user_id')!r}"
    try:
        same = Decimal(str(amount)) == Decimal(str(item.get("amount")))
    except (InvalidOperation, ValueError):
        same = False
    return None if same else f"amount {amount!r} where we sent {item.get('amount')!r}"


def _differs(user_id: str, cents: int, user: Any, amount: Any) -> str | None:
    """`_mismatch` against the user and cents an item was built from (`wire.build_items`: the amount is exactly
    `cents` / 100). A JSON number parsed to a float or int equals that decimal exactly when it equals the
    correctly rounded float `cents / 100` (both round the same decimal); anything else is compared as Decimal."""
    if user != user_id:
        return f"user {user!r} where we sent {user_id!r}"
    if type(amount) is float or type(amount) is int:
        same = amount == cents / 100
    else:
        try:
            same = Decimal(str(amount)) == Decimal(cents).scaleb(-2)
        except (InvalidOperation, ValueError):
            same = False
    return None if same else f"amount {amount!r} where we sent {cents / 100!r}"


def _field_errors(output: dict[str, Any]) -> list[dict[str, str]]:
    """Toloka's field -> {code, message} map (or a bare {code, message}) as our list of {column, code, message}."""
    if isinstance(output.get("code"), str):
        return [{"column": "", "code": output["code"], "message": str(output.get("message", ""))}]
    errors = []
    for column, detail in output.items():
        if isinstance(detail, dict):
            errors.append({"column": column, "code": str(detail.get("code", "")),
                           "message": str(detail.get("message", ""))})
    return errors or [{"column": "", "code": "UNKNOWN", "message": "item failed without an error message"}]
