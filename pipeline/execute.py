"""Submit planned operations and poll them to completion, a bounded number in flight at once.

The safety argument, step by step (see README "Exactly once"):
- a POST is only ever sent with the operation id already committed in the ledger;
- after any doubt (timeout, reset, 5xx) we ask the server by operation id before sending again, and a
  resend reuses the same id, so the server's OPERATION_ALREADY_EXISTS makes it harmless;
- each row's fate comes from the operation log (`__item_idx` = row key), written in one transaction;
- an outcome we cannot read is recorded `unknown` and never resent under a new id.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

import structlog

from pipeline.errors import (
    ApiError,
    ApiRejectedError,
    ApiTransientError,
    ApiUnreachable,
    AuthRefused,
    PayoutError,
    QuotaExhausted,
)
from pipeline.ledger import Ledger, Operation, RowResult
from pipeline.toloka import TolokaClient
from pipeline.wire import body_for

log = structlog.get_logger("payout.execute")

TERMINAL = ("SUCCESS", "FAIL")
# Item errors worth another attempt with the same data; validation codes (VALUE_*, ENTITY_*) are not.
RETRYABLE_ITEM_CODES = frozenset({"INTERNAL_ERROR", "OPERATION_EXECUTION_ERROR", "REMOTE_SERVICE_UNAVAILABLE",
                                  "NOT_ENOUGH_BALANCE", "TOO_MANY_REQUESTS", "NOT_IN_LOG"})


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
        on_rows_done: Callable[[int], None] = lambda n: None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.ledger = ledger
        self.client = client
        self.run_id = run_id
        self.concurrency = max(1, concurrency)
        self.poll_initial_s = poll_initial_s
        self.poll_max_s = poll_max_s
        self.on_rows_done = on_rows_done
        self._sleep = sleep
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._outcome = ExecutionOutcome()

    def run(self, operations: Iterable[Operation]) -> ExecutionOutcome:
        """Drive every operation to a recorded outcome, or stop cleanly on quota / unreachable API.

        `operations` may be a generator that commits each operation's intent before yielding it: workers
        start on the first ones while later intent is still being written.
        """
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="op") as pool:
            futures = [pool.submit(self._drive, op) for op in operations]
            for fut in as_completed(futures):
                try:
                    fut.result()
                except PayoutError as e:
                    self._stop.set()
                    if self._outcome.stopped_by is None or isinstance(e, AuthRefused):
                        self._outcome.stopped_by = e
        return self._outcome

    def _event(self, name: str) -> None:
        with self._lock:
            self._outcome.events[name] = self._outcome.events.get(name, 0) + 1

    # -- one operation ----------------------------------------------------------------------------

    def _drive(self, op: Operation) -> None:
        if self._stop.is_set():
            return
        rows = self.ledger.rows_of_operation(op.operation_id)
        remote = self._ensure_submitted(op, rows)
        while remote is not None and remote.get("status") not in TERMINAL:
            remote = self._wait(op)
            if remote is None:  # the server forgot it: resubmit under the same id
                self._event("op_lost_resubmitted")
                remote = self._ensure_submitted(op, rows, known_missing=True)
        if remote is not None:
            self._resolve(op, remote, [k for k, _ in rows])
        with self._lock:
            self._outcome.operations_done += 1

    def _ensure_submitted(self, op: Operation, rows: list[tuple[str, bytes]], known_missing: bool = False
                          ) -> dict[str, Any] | None:
        """Return the server's view of the operation, POSTing (same id, always) only when it is absent."""
        resumed = op.state == "submitted" or op.run_id != self.run_id
        if resumed and not known_missing:
            remote = self._lookup(op.operation_id)
            if remote is not None:
                return remote
            log.warning("operation_missing_on_server", operation_id=op.operation_id)
        body = body_for(rows)
        attempt = 0
        while not self._stop.is_set():
            try:
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
                doubt: ApiError = e
            except ApiTransientError as e:
                self._event("submit_doubt")  # the server may have created it: ask before sending again
                doubt = e
                self._sleep(self.client.retry.delay(attempt, getattr(e, "retry_after", None)))
            remote = self._lookup(op.operation_id)
            if remote is not None:
                self.ledger.mark_submitted(op.operation_id, remote)
                return remote
            log.info("submit_uncertain", operation_id=op.operation_id, error=str(doubt), attempt=attempt)
            if attempt >= self.client.retry.max_retries:
                raise ApiUnreachable(f"could not submit operation {op.operation_id}: {doubt}") from doubt
            attempt += 1
        return None

    def _lookup(self, operation_id: str) -> dict[str, Any] | None:
        try:
            return self.client.get_operation(operation_id)
        except ApiUnreachable:
            raise
        except ApiTransientError:
            return None

    def _wait(self, op: Operation) -> dict[str, Any] | None:
        """Poll with growing intervals until the operation is SUCCESS or FAIL (or unknown to the server)."""
        delay = self.poll_initial_s
        while True:
            self._sleep(delay)
            remote = self.client.get_operation(op.operation_id)
            if remote is None or remote.get("status") in TERMINAL:
                return remote
            delay = min(delay * 2, self.poll_max_s)

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

    def _resolve(self, op: Operation, remote: dict[str, Any], row_keys: list[str]) -> None:
        """Map every log entry back to its row by `__item_idx` and record all results at once."""
        try:
            entries = self.client.get_operation_log(op.operation_id)
        except ApiRejectedError as e:
            # The log is gone (archived or lost): items may be paid. Never resend blind.
            log.error("operation_log_unavailable", operation_id=op.operation_id, code=e.code)
            entries = None
        results = map_log(row_keys, remote.get("status"), entries)
        self.ledger.record_outcome(op.operation_id, remote, results, self.run_id)
        self._event(f"op_{str(remote.get('status')).lower()}")
        self.on_rows_done(len(row_keys))


def map_log(row_keys: Sequence[str], status: str | None, entries: list[dict[str, Any]] | None
            ) -> list[RowResult]:
    """Turn an operation log into one result per row; rows missing from it are `unknown` unless FAIL."""
    wanted = set(row_keys)
    seen: dict[str, RowResult] = {}
    for entry in entries or ():
        key = (entry.get("input") or {}).get("__item_idx")
        if key not in wanted:
            continue
        output = entry.get("output") or {}
        if entry.get("success") and output.get("user_bonus_id") is not None:
            seen[key] = RowResult(key, "paid", bonus_id=str(output["user_bonus_id"]))
        elif key not in seen:
            errors = _field_errors(output)
            retryable = any(e["code"] in RETRYABLE_ITEM_CODES for e in errors)
            seen[key] = RowResult(key, "failed", errors=errors, retryable=retryable)
    missing_status = "failed" if entries is not None and status == "FAIL" else "unknown"
    missing = [{"column": "", "code": "NOT_IN_LOG", "message": f"operation ended {status} without a log entry"}]
    return [seen.get(k) or RowResult(k, missing_status, errors=missing, retryable=missing_status == "failed")
            for k in row_keys]


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
