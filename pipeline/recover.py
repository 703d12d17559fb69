"""The server is the truth when the ledger does not know: rebuild the ledger from the target's own operations.

A ledger can be lost (a new host, a fresh container, a deleted file). Every bonus we ever sent carries its
row key as `__item_idx`, which Toloka echoes in the operation log, so the target's USER_BONUS.BATCH_CREATE
operations and their logs say which rows it paid. Recovery reads those the ledger does not know and records
each row it finds: paid (with its bonus id), or unknown where the log is not definitive. A row the server
refused needs no record: nothing was paid, and the next run plans it again.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import structlog

from pipeline import keys
from pipeline.errors import ApiRejectedError, UsageError
from pipeline.execute import TERMINAL, map_log
from pipeline.ledger import Ledger, utcnow
from pipeline.money import cents_from_json
from pipeline.toloka import TolokaClient

log = structlog.get_logger("payout.recover")

OPERATION_TYPE = "USER_BONUS.BATCH_CREATE"
ROW_KEY = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class Recovery:
    """What one recovery read and learned."""

    since: str
    operations_read: int = 0
    operations_new: int = 0
    rows_paid: int = 0
    rows_unknown: int = 0
    requests: int = 0

    def describe(self) -> str:
        return (f"read the server's operations since {self.since} ({self.requests} requests): "
                f"{self.operations_new} operation(s) the ledger did not know, {self.rows_paid:,} row(s) paid, "
                f"{self.rows_unknown:,} of unknown outcome")


def recover_into(ledger: Ledger, client: TolokaClient, since: datetime, until: datetime | None = None, *,
                 max_wait_s: float = 1800.0, poll_s: float = 1.0) -> Recovery:
    """Read the target's bonus operations submitted in [since, until] and record what the ledger lacks."""
    before = sum(client.requests_made.values())
    stats = Recovery(since=_stamp(since))
    filters: dict[str, Any] = {"type": OPERATION_TYPE, "submitted_gte": _stamp(since)}
    if until is not None:
        filters["submitted_lte"] = _stamp(until)
    known = ledger.known_operation_ids()
    for op in client.iter_operations(**filters):
        stats.operations_read += 1
        if not isinstance(op, dict) or op.get("id") in known or op.get("type", OPERATION_TYPE) != OPERATION_TYPE:
            continue
        op = _finished(client, op, max_wait_s, poll_s)
        rows = _rows_of(client, op)
        if not rows:
            continue
        ledger.record_recovered(op, rows)
        stats.operations_new += 1
        stats.rows_paid += sum(r[4] == "paid" for r in rows)
        stats.rows_unknown += sum(r[4] == "unknown" for r in rows)
    ledger.set_meta("recovered_through", utcnow())
    stats.requests = sum(client.requests_made.values()) - before
    log.info("recovered", stage="recover", **{k: v for k, v in vars(stats).items()})
    return stats


def _finished(client: TolokaClient, op: dict[str, Any], max_wait_s: float, poll_s: float) -> dict[str, Any]:
    """The operation once SUCCESS or FAIL (its log is complete only then); bounded by `max_wait_s`."""
    give_up = time.monotonic() + max_wait_s
    while op.get("status") not in TERMINAL:
        if time.monotonic() > give_up:
            raise UsageError(f"operation {op.get('id')} on the server is still {op.get('status')} after "
                             f"{max_wait_s:g} s; run again later (nothing was sent)")
        time.sleep(poll_s)
        op = client.get_operation(str(op["id"])) or op
    return op


def _rows_of(client: TolokaClient, op: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Ledger rows (see Ledger.record_recovered) for the log entries that carry one of our row keys."""
    try:
        entries = client.get_operation_log(str(op["id"]))
    except ApiRejectedError as e:  # archived (Toloka keeps logs a month): nothing more to learn from it
        log.warning("recover_log_unavailable", operation_id=op.get("id"), error=str(e))
        return []
    # an answer we cannot trust (ApiUnexpectedAnswer) propagates: recovery stops before `recovered_through`
    # moves, so the next run reads this operation again
    sent = []
    for entry in entries:
        echoed = entry.get("input") if isinstance(entry, dict) else None
        key = echoed.get("__item_idx") if isinstance(echoed, dict) else None
        if isinstance(echoed, dict) and isinstance(key, str) and ROW_KEY.match(key):
            item = {k: v for k, v in echoed.items() if k != "__item_idx"}
            sent.append((key, orjson.dumps(item)))
    if not sent:
        return []
    paid_at = _ledger_time(op.get("finished"))
    out = []
    for (key, item_json), result in zip(sent, map_log(sent, op.get("status"), entries)):
        if result.status not in ("paid", "unknown"):
            continue
        item = orjson.loads(item_json)
        try:
            cents = cents_from_json(item.get("amount"))
            lookalike = keys.lookalike_key_of_item(item)
        except (TypeError, ValueError, ArithmeticError):
            continue  # not a bonus this pipeline sent
        errors = orjson.dumps(result.errors).decode() if result.errors else None
        out.append((key, str(item.get("user_id")), cents, item_json, result.status, result.bonus_id, errors,
                    lookalike, paid_at))
    return out


def window_start(days: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _ledger_time(toloka_time: Any) -> str:
    """Toloka's UTC time without zone (e.g. 2026-11-30T00:01:02.123) in the ledger's format."""
    try:
        parsed = datetime.fromisoformat(str(toloka_time).replace("Z", ""))
    except ValueError:
        return utcnow()
    return parsed.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def run_recover(settings: Any, target: Any, *, since: datetime, until: datetime | None = None) -> int:
    """`payout recover`: rebuild the ledger's knowledge from the server; exit 0."""
    from pipeline.target import make_client

    with Ledger(settings.ledger) as ledger:
        ledger.bind_target(target.ledger_id(settings))
        with make_client(target, settings) as client:
            stats = recover_into(ledger, client, since, until, max_wait_s=settings.max_wait_s)
    print(f"Ledger {settings.ledger_label}: {stats.describe()}")
    return 0
