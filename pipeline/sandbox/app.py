"""The aiohttp application: Toloka's user-bonuses and operations endpoints plus the /_sandbox admin."""
from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from .faults import Faults, FaultSpec
from .store import OperationExists, Store, render_time
from .validation import Limits, conflict_indexes
from .worker import OperationWorker, as_items, split_items

JSON = "application/json"
CONFLICT_MESSAGE = (
    "It is not allowed to apply multiple bonuses with the same amount, title, message and comment "
    "to same Toloker in single operation"
)
RESET = 599  # internal marker: the connection was aborted, the client saw no status
OPERATION_TYPE = "USER_BONUS.BATCH_CREATE"  # the only operation type the sandbox has
MAX_OPERATIONS_LIMIT = 500  # toloka-kit's find_operations: "The maximum allowed value: 500"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Stats:
    """Counters served by GET /_sandbox/stats."""

    requests: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    bonuses_created: int = 0


class ApiError(Exception):
    """A Toloka error answer: HTTP status plus the {request_id, code, message, payload} envelope."""

    def __init__(self, status: int, code: str, message: str, payload: Any = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.payload, self.headers = status, code, message, payload, headers

    def response(self) -> web.Response:
        body: dict[str, Any] = {"request_id": str(uuid.uuid4()), "code": self.code, "message": self.message}
        if self.payload is not None:
            body["payload"] = self.payload
        return web.Response(status=self.status, body=orjson.dumps(body), content_type=JSON, headers=self.headers)


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type=JSON)


def _invalid(name: str, code: str, message: str) -> ApiError:
    return ApiError(400, "VALIDATION_ERROR", "Validation failed", {name: {"code": code, "message": message}})


def _page(items: list[dict[str, Any]], has_more: bool) -> web.Response:
    return json_response({"items": items, "has_more": has_more})


def _bool_param(query: Any, name: str) -> bool:
    value = query.get(name, "false").lower()
    if value not in ("true", "false"):
        raise _invalid(name, "BOOLEAN_EXPECTED", "Boolean expected")
    return value == "true"


def _time_param(name: str, text: str) -> int:
    try:
        moment = datetime.fromisoformat(text.removesuffix("Z"))
    except ValueError:
        raise _invalid(name, "INVALID_DATE_TIME_SYNTAX", "Date or date-time expected") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1_000_000)


def _bonus_id_param(name: str, text: str) -> int:
    if not text.isdigit():
        raise _invalid(name, "INVALID_VALUE", "Bonus id expected")
    return int(text)


class Listing:
    """WHERE, ORDER BY and LIMIT of a Toloka list request (`GET /user-bonuses`, `GET /operations`)."""

    def __init__(self, query: Any) -> None:
        self.query = query
        self.where: list[str] = []
        self.args: list[Any] = []

    def equal(self, *names: str) -> None:
        """Exact-match filters; each name is also the column."""
        for name in names:
            if name in self.query:
                self.where.append(f"{name} = ?")
                self.args.append(self.query[name])

    def ranges(self, name: str, column: str, convert: Callable[[str, str], Any]) -> None:
        """`<name>_gt/gte/lt/lte` filters on `column`; `convert(param, text)` gives the SQL value or raises."""
        for suffix, op in (("gt", ">"), ("gte", ">="), ("lt", "<"), ("lte", "<=")):
            param = f"{name}_{suffix}"
            if param in self.query:
                self.where.append(f"{column} {op} ?")
                self.args.append(convert(param, self.query[param]))

    def order(self, columns: dict[str, str]) -> str:
        """ORDER BY from `sort` (comma list, `-` for descending; default `id`), always ending in a unique id."""
        order = []
        for part in self.query.get("sort", "id").split(","):
            name = part.strip().removeprefix("-")
            if name not in columns:
                raise _invalid("sort", "UNKNOWN_ENUM_VALUE", f"Unknown sort field {name!r}")
            order.append(columns[name] + (" DESC" if part.strip().startswith("-") else ""))
        if not any(item.startswith("id") for item in order):
            order.append("id")
        return ", ".join(order)

    def limit(self, maximum: int) -> int:
        text = self.query.get("limit", "50")
        if not text.isdigit() or not 1 <= int(text) <= maximum:
            raise _invalid("limit", "VALUE_OUT_OF_BOUNDS", f"Limit must be from 1 to {maximum}")
        return int(text)


def _seconds_to_utc_midnight() -> int:
    now = datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, int((midnight - now).total_seconds()) + 1)


class Sandbox:
    """State and handlers of one sandbox server; lives on one event loop."""

    def __init__(self, db_path: str | Path, token: str, faults: FaultSpec, seed: int, limits: Limits) -> None:
        self.db_path = db_path
        self.limits = limits
        self.stats = Stats()
        self.faults = Faults(faults, seed, self.stats.faults)
        self._auth = {f"OAuth {token}", f"ApiKey {token}"}
        self._window = (0, 0)
        self._quota = ("", 0)
        self.store: Store
        self.worker: OperationWorker
        self._runner: web.AppRunner | None = None

    async def start(self, sock: socket.socket) -> None:
        """Open the database, resume unfinished operations and serve on `sock`."""
        self.store = Store(self.db_path)
        self.worker = OperationWorker(self.store, lambda: self.faults, self.limits, self.stats)
        app = web.Application(middlewares=[self._middleware], client_max_size=256 * 1024 * 1024)
        app.router.add_post("/api/v1/user-bonuses", self.post_bonuses)
        app.router.add_get("/api/v1/user-bonuses", self.list_bonuses)
        app.router.add_get("/api/v1/user-bonuses/{id}", self.get_bonus)
        app.router.add_get("/api/v1/operations", self.list_operations)
        app.router.add_get("/api/v1/operations/{id}", self.get_operation)
        app.router.add_get("/api/v1/operations/{id}/log", self.get_operation_log)
        app.router.add_post("/_sandbox/faults", self.set_faults)
        app.router.add_get("/_sandbox/faults", self.get_faults)
        app.router.add_get("/_sandbox/stats", self.get_stats)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()
        self.worker.resume()

    async def close(self) -> None:
        await self.worker.close()
        if self._runner is not None:
            await self._runner.cleanup()
        self.store.close()

    # ---- request pipeline: auth, limits, injected faults -------------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/_sandbox/"):  # admin: the same token as the API (faults change what it pays)
            if request.headers.get("Authorization") not in self._auth:
                return ApiError(401, "AUTHENTICATION_ERROR", "admin endpoints need 'Authorization: OAuth <token>'"
                                ).response()
            return await handler(request)
        resource = request.match_info.route.resource
        endpoint = f"{request.method} {resource.canonical if resource is not None else 'unknown'}"
        self.stats.requests[endpoint] += 1
        try:
            response = await self._guarded(request, handler, endpoint)
        except ApiError as exc:
            response = exc.response()
        except web.HTTPException as exc:
            code = {404: "DOES_NOT_EXIST", 405: "METHOD_NOT_ALLOWED"}.get(exc.status, "VALIDATION_ERROR")
            response = ApiError(exc.status, code, exc.reason).response()
        self.stats.statuses["reset" if response.status == RESET else str(response.status)] += 1
        return response

    async def _guarded(self, request: web.Request, handler: Handler, endpoint: str) -> web.StreamResponse:
        if request.headers.get("Authorization") not in self._auth:
            raise ApiError(401, "AUTHENTICATION_ERROR", "Authentication failed: use 'Authorization: OAuth <token>'")
        second = int(time.monotonic())
        window, used = self._window
        used = used + 1 if window == second else 1
        self._window = (second, used)
        if used > self.limits.rate_limit:
            raise ApiError(429, "TOO_MANY_REQUESTS", f"Too many requests: more than {self.limits.rate_limit} per second",
                           {"interval": "SEC", "limit": self.limits.rate_limit}, {"Retry-After": "1"})
        if endpoint == "POST /api/v1/user-bonuses":
            self._spend_daily_quota()
        spec = self.faults.spec
        if spec.latency_ms:
            await asyncio.sleep(spec.latency_ms / 1000)
        status = self.faults.before_request()
        if status == 500:
            raise ApiError(500, "INTERNAL_ERROR", "Internal server error (injected fault)")
        if status == 503:
            raise ApiError(503, "REMOTE_SERVICE_UNAVAILABLE", "Service unavailable (injected fault)")
        if status == 429:
            raise ApiError(429, "TOO_MANY_REQUESTS", "Too many requests (injected fault)",
                           {"interval": "MIN"}, {"Retry-After": "1"})
        return await handler(request)

    def _spend_daily_quota(self) -> None:
        """Count one POST against today's (UTC) quota; the count is kept in the database across restarts."""
        day = datetime.now(UTC).date().isoformat()
        quota_day, used = self._quota
        if quota_day != day:
            used = self.store.quota_used(day)
            self._quota = (day, used)
        if used >= self.limits.daily_quota:
            raise ApiError(429, "TOO_MANY_REQUESTS", f"Daily quota of {self.limits.daily_quota} requests is spent",
                           {"interval": "DAY", "limit": self.limits.daily_quota},
                           {"Retry-After": str(_seconds_to_utc_midnight())})
        self.store.save_quota(day, used + 1)
        self._quota = (day, used + 1)

    def _reset_after_commit(self, request: web.Request) -> bool:
        """Drop the connection without an answer when the fault fires (the work is already committed)."""
        if not self.faults.roll("reset_after_commit"):
            return False
        if request.transport is not None:
            request.transport.abort()
        return True

    # ---- user bonuses ----------------------------------------------------------------------------
    def bonus_view(self, row: tuple) -> dict[str, Any]:
        view: dict[str, Any] = {"user_id": row[1], "amount": orjson.Fragment(row[2])}
        if row[3] is not None:
            view["private_comment"] = row[3]
        if row[4] is not None:
            view["public_title"] = orjson.Fragment(row[4])
        if row[5] is not None:
            view["public_message"] = orjson.Fragment(row[5])
        view["without_message"] = bool(row[6])
        if row[7] is not None:
            view["assignment_id"] = row[7]
        view["id"] = str(row[0])
        view["created"] = self.store.created_text(row[8])
        return view

    async def post_bonuses(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        async_mode = _bool_param(query, "async_mode")
        skip_invalid = _bool_param(query, "skip_invalid_items")
        op_id = query.get("operation_id")
        if op_id is not None:
            try:
                uuid.UUID(op_id)
            except ValueError:
                raise _invalid("operation_id", "UUID_EXPECTED", "UUID expected") from None
        try:
            raw = await request.read()
        except ConnectionResetError:  # the client went away mid-body (e.g. killed): nothing to answer
            raise ApiError(400, "VALIDATION_ERROR", "Request body was cut off") from None
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ApiError(400, "VALIDATION_ERROR", "Request body is not valid JSON") from None
        if not isinstance(body, (list, dict)) or not body:
            raise ApiError(400, "VALIDATION_ERROR", "Body must be a bonus object or a non-empty array of them")
        items = as_items(body)
        maximum = self.limits.max_async_items if async_mode else self.limits.max_sync_items
        if len(items) > maximum:
            raise ApiError(413, "TOO_MANY_ITEMS", f"The number of items in the request exceeds the allowed value ({maximum})",
                           {"max_items": maximum, "items": len(items)})
        if op_id is not None and self.store.operation_exists(op_id):
            raise ApiError(409, "OPERATION_ALREADY_EXISTS", f"Operation {op_id} already exists")
        repeated = conflict_indexes(items)
        if repeated:
            raise ApiError(409, "ENTITY_CONFLICT", CONFLICT_MESSAGE,
                           {"user_id": {"code": "ENTITY_CONFLICT", "message": CONFLICT_MESSAGE}, "indexes": repeated})
        if async_mode:
            return self._submit_async(request, op_id or str(uuid.uuid4()), skip_invalid, items, raw)
        return self._create_sync(request, body, items, op_id, skip_invalid, raw)

    def _submit_async(self, request: web.Request, op_id: str, skip_invalid: bool, items: list[Any], raw: bytes
                      ) -> web.StreamResponse:
        try:
            self.store.submit_operation(op_id, skip_invalid, len(items), raw)
        except OperationExists:
            raise ApiError(409, "OPERATION_ALREADY_EXISTS", f"Operation {op_id} already exists") from None
        self.worker.parsed.put(op_id, items)
        self.worker.schedule(op_id)
        if self._reset_after_commit(request):
            return web.Response(status=RESET)
        return json_response(self.operation_view(self.store.get_operation(op_id)), 201)  # type: ignore[arg-type]

    def _create_sync(
        self, request: web.Request, body: Any, items: list[Any], op_id: str | None, skip_invalid: bool, raw: bytes
    ) -> web.StreamResponse:
        valid, invalid = split_items(items, self.limits)
        if invalid and (not skip_invalid or not valid):
            if isinstance(body, dict):
                payload: Any = orjson.Fragment(invalid[0][1])
            else:
                payload = {str(idx): orjson.Fragment(out) for idx, out in invalid}
            raise ApiError(400, "VALIDATION_ERROR", "Validation failed", payload)
        try:
            rows = self.store.create_bonuses_sync(valid, invalid, op_id, skip_invalid, raw, len(items))
        except OperationExists:
            raise ApiError(409, "OPERATION_ALREADY_EXISTS", f"Operation {op_id} already exists") from None
        self.stats.bonuses_created += len(rows)
        if self._reset_after_commit(request):
            return web.Response(status=RESET)
        if isinstance(body, dict):
            return json_response(self.bonus_view(rows[0]), 201)
        result: dict[str, Any] = {"items": {str(row[10]): self.bonus_view(row) for row in rows}}
        if invalid:
            result["validation_errors"] = {str(idx): orjson.Fragment(out) for idx, out in invalid}
        return json_response(result, 201)

    async def list_bonuses(self, request: web.Request) -> web.StreamResponse:
        listing = Listing(request.query)
        listing.equal("user_id", "private_comment", "assignment_id")
        listing.ranges("id", "id", _bonus_id_param)
        listing.ranges("created", "created_us", _time_param)
        order = listing.order({"id": "id", "created": "created_us"})
        limit = listing.limit(self.limits.max_list_limit)
        rows = self.store.find_bonuses(listing.where, listing.args, order, limit + 1)
        return _page([self.bonus_view(row) for row in rows[:limit]], len(rows) > limit)

    async def get_bonus(self, request: web.Request) -> web.StreamResponse:
        text = request.match_info["id"]
        row = self.store.get_bonus(int(text)) if text.isdigit() else None
        if row is None:
            raise ApiError(404, "DOES_NOT_EXIST", f"User bonus {text} does not exist")
        return json_response(self.bonus_view(row))

    # ---- operations ------------------------------------------------------------------------------
    @staticmethod
    def operation_view(row: tuple) -> dict[str, Any]:
        op_id, status, skip, submitted, started, finished, total, valid, not_valid, success, failed = row
        view: dict[str, Any] = {"id": op_id, "type": OPERATION_TYPE, "status": status,
                                "submitted": render_time(submitted)}
        if started is not None:
            view["started"] = render_time(started)
        if finished is not None:
            view["finished"] = render_time(finished)
        view["progress"] = 100 if status in ("SUCCESS", "FAIL") else 0
        view["parameters"] = {"skip_invalid_items": bool(skip)}
        view["details"] = {"total_count": total, "valid_count": valid, "not_valid_count": not_valid,
                           "success_count": success, "failed_count": failed}
        return view

    def _operation(self, request: web.Request) -> tuple:
        op_id = request.match_info["id"]
        row = self.store.get_operation(op_id)
        if row is None:
            raise ApiError(404, "DOES_NOT_EXIST", f"Operation {op_id} does not exist")
        return row

    async def get_operation(self, request: web.Request) -> web.StreamResponse:
        return json_response(self.operation_view(self._operation(request)))

    async def list_operations(self, request: web.Request) -> web.StreamResponse:
        listing = Listing(request.query)
        listing.equal("status")
        listing.ranges("id", "id", lambda name, text: text)
        listing.ranges("submitted", "submitted_us", _time_param)
        listing.ranges("finished", "finished_us", _time_param)
        order = listing.order({"id": "id", "submitted": "submitted_us", "finished": "finished_us"})
        limit = listing.limit(MAX_OPERATIONS_LIMIT)
        if request.query.get("type", OPERATION_TYPE) != OPERATION_TYPE:
            return _page([], False)  # the sandbox only has bonus operations
        rows = self.store.find_operations(listing.where, listing.args, order, limit + 1)
        return _page([self.operation_view(row) for row in rows[:limit]], len(rows) > limit)

    async def get_operation_log(self, request: web.Request) -> web.StreamResponse:
        op_id, status = self._operation(request)[:2]
        blob, paid, failed = self.store.operation_log(op_id)
        log = []
        for idx, item in enumerate(self.worker.parsed.get(op_id, blob)):
            if idx in paid:
                log.append({"type": "USER_BONUS_PERSIST", "success": True, "input": item,
                            "output": {"user_bonus_id": str(paid[idx])}})
            elif idx in failed:
                kind, out = failed[idx]
                log.append({"type": kind, "success": False, "input": item, "output": orjson.Fragment(out)})
        response = json_response(log)
        if status in ("SUCCESS", "FAIL"):  # finished: its items are not needed again soon
            self.worker.parsed.drop(op_id)
        return response

    # ---- admin -----------------------------------------------------------------------------------
    async def set_faults(self, request: web.Request) -> web.StreamResponse:
        try:
            body = orjson.loads(await request.read() or b"{}")
            spec = FaultSpec.parse(body.get("spec"))
            seed = int(body.get("seed", self.faults.seed))
        except (ValueError, TypeError, AttributeError) as exc:
            return json_response({"error": str(exc)}, 400)
        self.faults = Faults(spec, seed, self.stats.faults)
        return await self.get_faults(request)

    async def get_faults(self, request: web.Request) -> web.StreamResponse:
        return json_response({"spec": self.faults.spec.render(), "seed": self.faults.seed})

    async def get_stats(self, request: web.Request) -> web.StreamResponse:
        bonuses_total, operations = self.store.counts()
        return json_response({
            "requests": dict(self.stats.requests),
            "statuses": dict(self.stats.statuses),
            "faults": dict(self.stats.faults),
            "bonuses_created": self.stats.bonuses_created,
            "bonuses_total": bonuses_total,
            "operations": operations,
            "faults_spec": self.faults.spec.render(),
            "seed": self.faults.seed,
        })
