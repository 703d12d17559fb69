"""Background runner of USER_BONUS.BATCH_CREATE operations: PENDING -> RUNNING -> SUCCESS/FAIL."""
from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

import orjson

from .faults import Faults
from .store import Store
from .validation import Limits, validate_item

NOT_ISSUED_INVALID_BATCH = orjson.dumps({
    "code": "VALIDATION_ERROR",
    "message": "Not issued: another item of this operation failed validation and skip_invalid_items is false",
})
NOT_ISSUED_OP_FAILED = orjson.dumps({
    "code": "OPERATION_EXECUTION_ERROR",
    "message": "Not issued: the operation failed (injected fault op_fail); no bonus of this operation was issued",
})


def as_items(body: Any) -> list[Any]:
    """The request body as a list of items (a single object is a list of one)."""
    return body if isinstance(body, list) else [body]


def split_items(items: list[Any], limits: Limits) -> tuple[list[tuple[int, dict[str, Any]]], list[tuple[int, bytes]]]:
    """Valid (index, item) pairs and (index, field-errors JSON) of the invalid ones."""
    valid: list[tuple[int, dict[str, Any]]] = []
    invalid: list[tuple[int, bytes]] = []
    for idx, item in enumerate(items):
        errors = validate_item(item, limits)
        if errors is None:
            valid.append((idx, item))
        else:
            invalid.append((idx, orjson.dumps(errors)))
    return valid, invalid


class ParsedItems:
    """The items of recent operations as parsed from their POST body (the stored blob, parsed), so running an
    operation and serving its log do not parse the same body again; bounded by item count, oldest dropped first.
    Whatever is not here is parsed from the stored blob, as after a restart; a served log lets its items go."""

    def __init__(self, max_items: int = 60_000) -> None:
        self._max_items = max_items
        self._held = 0
        self._items: OrderedDict[str, list[Any]] = OrderedDict()

    def put(self, op_id: str, items: list[Any]) -> None:
        self.drop(op_id)
        if len(items) > self._max_items:
            return
        self._items[op_id] = items
        self._held += len(items)
        while self._held > self._max_items:
            _, old = self._items.popitem(last=False)
            self._held -= len(old)

    def drop(self, op_id: str) -> None:
        old = self._items.pop(op_id, None)
        if old is not None:
            self._held -= len(old)

    def get(self, op_id: str, blob: bytes) -> list[Any]:
        items = self._items.get(op_id)
        return items if items is not None else as_items(orjson.loads(blob))


class OperationWorker:
    """Runs each submitted operation in its own task; all database work happens on the loop thread."""

    def __init__(self, store: Store, faults_ref: Any, limits: Limits, stats: Any,
                 parsed: ParsedItems | None = None) -> None:
        self._store = store
        self._faults_ref = faults_ref
        self._limits = limits
        self._stats = stats
        self._tasks: set[asyncio.Task[None]] = set()
        self.parsed = parsed or ParsedItems()

    @property
    def _faults(self) -> Faults:
        return self._faults_ref()

    def schedule(self, op_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self._run(op_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def resume(self) -> None:
        """Restart every operation left PENDING or RUNNING by a previous process."""
        for op_id in self._store.unfinished_operations():
            self.schedule(op_id)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(self, op_id: str) -> None:
        await asyncio.sleep(0)  # let the POST answer PENDING first
        self._store.mark_running(op_id)
        slow_ms = self._faults.spec.slow_op_ms
        if slow_ms:
            await asyncio.sleep(slow_ms / 1000)
        self.process(op_id)

    def process(self, op_id: str) -> None:
        """Validate and pay one operation, finishing it in a single transaction."""
        loaded = self._store.operation_items(op_id)
        if loaded is None or loaded[0] not in ("PENDING", "RUNNING"):
            return
        _, skip_invalid, blob = loaded
        items = self.parsed.get(op_id, blob)
        valid, invalid = split_items(items, self._limits)
        failures = [(idx, "USER_BONUS_VALIDATE", out) for idx, out in invalid]
        paid = skip_invalid or not invalid
        if paid and self._faults.roll("op_fail"):
            paid = False
            failures += [(idx, "USER_BONUS_PERSIST", NOT_ISSUED_OP_FAILED) for idx, _ in valid]
        elif not paid:
            failures += [(idx, "USER_BONUS_PERSIST", NOT_ISSUED_INVALID_BATCH) for idx, _ in valid]
        created = self._store.finish_operation(op_id, valid, failures, len(invalid), paid)
        self._stats.bonuses_created += created
