"""The one edge to the network: a requests.Session client for Toloka's user-bonuses and operations API.

No `requests` exception escapes this module: every failure becomes an `ApiError` subclass that says
whether asking again is safe (`ApiTransientError`) or the server refused for good (`ApiRejectedError`).
Nothing is taken as definitive that the server has not definitively shown us:

- an answer that is not what we asked for (a 2xx that is not JSON or not the operation we named, an HTML
  404 from a proxy, a 4xx without Toloka's JSON error envelope) is `ApiUnexpectedAnswer`: outcome unknown;
- "absent" (None) only on a JSON 404 envelope whose code says so (DOES_NOT_EXIST, NOT_FOUND, ...);
- every exchange (connect, headers and the whole body) ends within `deadline_s`, however slowly the server
  dribbles: a watchdog thread shuts the socket down at the deadline.

GETs are retried here with backoff; POSTs are never retried here, because only the caller knows how to
check whether an earlier attempt reached the server (see `execute.py`).
"""

from __future__ import annotations

import heapq
import http.client
import ipaddress
import itertools
import random
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
import orjson
import requests
import urllib3.exceptions
import urllib3.poolmanager
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from pipeline.errors import (
    ApiError,
    ApiRejectedError,
    ApiTransientError,
    ApiUnexpectedAnswer,
    ApiUnreachable,
    AuthRefused,
    QuotaExhausted,
    RateLimited,
    UsageError,
)

QUOTA_SECONDS = {"MIN": 60.0, "HOUR": 3600.0, "DAY": 86400.0}
OPERATION_STATUSES = frozenset({"PENDING", "RUNNING", "SUCCESS", "FAIL"})
BONUS_OPERATION_TYPE = "USER_BONUS.BATCH_CREATE"
ABSENT_CODE_SUFFIXES = ("DOES_NOT_EXIST", "NOT_FOUND")  # DOES_NOT_EXIST, ENTITY_NOT_FOUND, NOT_FOUND, ...
MAX_OPERATIONS_LIMIT = 500  # GET /operations: Toloka's maximum page size

Check = Callable[[Any], "str | None"]  # a 2xx answer -> what is wrong with it, or None


class LogInput(msgspec.Struct, gc=False):
    """What payout reads of a log entry's echo of the item sent (the rest of the item is skipped, not built)."""

    item_idx: Any = msgspec.field(name="__item_idx", default=None)
    user_id: Any = None
    amount: Any = None


class LogEntry(msgspec.Struct, gc=False):
    """What payout reads of one operation log entry; absent fields are None, as `dict.get` would give."""

    input: LogInput | None = None
    success: Any = None
    output: Any = None


_LOG_DECODER = msgspec.json.Decoder(list[LogEntry])


def _decode_log(content: bytes) -> Any:
    """A log of the expected shape as `LogEntry`s; any other answer as orjson parses it (then checked as usual)."""
    try:
        return _LOG_DECODER.decode(content)
    except msgspec.DecodeError:
        return orjson.loads(content)
_ABSENT = object()  # a JSON 404 "does not exist" answer, where the caller asked for that to be a value


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter; `Retry-After` from the server wins when it is longer."""

    max_retries: int = 8
    base_s: float = 0.2
    max_s: float = 30.0
    # A quota wait longer than this is not slept through: the caller stops cleanly instead.
    max_quota_wait_s: float = 120.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        backoff = random.uniform(0, min(self.max_s, self.base_s * 2**attempt))
        return max(backoff, retry_after or 0.0)


class TolokaClient:
    """Thread-safe client: one Session per thread, all sharing the same settings.

    `timeout_s` bounds connecting and each wait for bytes; `deadline_s` bounds a whole exchange (connect,
    headers and the entire body), so a server that answers one byte a second still ends in time.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout_s: float = 10.0,
        deadline_s: float = 60.0,
        retry: RetryPolicy = RetryPolicy(),
        pool_size: int = 8,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = refuse_plain_http(base_url).rstrip("/")
        self._auth = f"OAuth {token}"
        self._secret = token.encode()
        self.timeout_s = timeout_s
        self.deadline_s = deadline_s
        self.retry = retry
        self._pool_size = pool_size
        self._sleep = sleep
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()
        self.requests_made: dict[str, int] = {}

    # -- plumbing -----------------------------------------------------------------------------

    def __enter__(self) -> TolokaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            for s in self._sessions:
                s.close()
            self._sessions.clear()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            adapter = _DeadlineAdapter(pool_connections=1, pool_maxsize=self._pool_size, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.headers.update({"Authorization": self._auth, "Content-Type": "application/json"})
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def _count(self, kind: str) -> None:
        with self._lock:
            self.requests_made[kind] = self.requests_made.get(kind, 0) + 1

    def _send(self, method: str, path: str, kind: str, *, check: Check | None = None, absent: bool = False,
              decode: Callable[[bytes], Any] = orjson.loads, **kwargs: Any) -> Any:
        """One HTTP exchange within the deadline; returns the parsed JSON answer, or raises a translated
        `ApiError`. `check` judges a 2xx answer; with `absent`, a JSON 404 "does not exist" returns _ABSENT."""
        self._count(kind)
        url = f"{self.base_url}/api/v1{path}"
        exchange = _Exchange(time.monotonic() + self.deadline_s)
        _WATCHDOG.arm(exchange)
        _current.exchange = exchange
        try:
            resp = self._session().request(method, url, timeout=self.timeout_s, allow_redirects=False, **kwargs)
        except (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as e:
            if exchange.expired:
                raise ApiTransientError(f"{method} {path}: exceeded the {self.deadline_s:g} s deadline") from e
            if isinstance(e, requests.Timeout):
                raise ApiTransientError(f"{method} {path}: timed out after {self.timeout_s:g} s") from e
            raise ApiTransientError(f"{method} {path}: connection failed ({type(e).__name__})") from e
        finally:
            _current.exchange = None
            _WATCHDOG.disarm(exchange)
        if self._secret and self._secret in resp.content:  # a server echoing the token must not carry it into
            resp._content = resp.content.replace(self._secret, b"***")  # errors, reports or the ledger
        status = resp.status_code
        if 200 <= status < 300:
            try:
                answer = decode(resp.content)
            except orjson.JSONDecodeError as e:
                raise ApiUnexpectedAnswer(f"{method} {path}: HTTP {status} answer is not JSON ({_shape(resp)})",
                                          status=status) from e
            problem = check(answer) if check is not None else None
            if problem is not None:
                raise ApiUnexpectedAnswer(f"{method} {path}: HTTP {status} answer is {problem}", status=status)
            return answer
        error = _error_from_response(method, path, resp, self.retry.max_quota_wait_s)
        if absent and status == 404 and isinstance(error, ApiRejectedError):
            if str(error.code).endswith(ABSENT_CODE_SUFFIXES):
                return _ABSENT
            raise ApiUnexpectedAnswer(f"{error} (a 404 that does not say the resource does not exist)",
                                      status=status, code=error.code, payload=error.payload,
                                      request_id=error.request_id)
        raise error

    def _get(self, path: str, kind: str, params: dict[str, Any] | None = None, *, check: Check | None = None,
             absent: bool = False, decode: Callable[[bytes], Any] = orjson.loads) -> Any:
        """GET with retries on transient errors; quota waits beyond the policy raise `QuotaExhausted`.

        When retries run out: `ApiUnexpectedAnswer` if the server kept answering something we cannot trust,
        `ApiUnreachable` otherwise."""
        attempt = 0
        while True:
            try:
                return self._send("GET", path, kind, params=params, check=check, absent=absent, decode=decode)
            except QuotaExhausted:
                raise
            except ApiTransientError as e:
                if attempt >= self.retry.max_retries:
                    last = dict(status=e.status, code=e.code, payload=e.payload, request_id=e.request_id)
                    tail = f"(gave up after {attempt + 1} attempts)"
                    if isinstance(e, ApiUnexpectedAnswer):
                        raise ApiUnexpectedAnswer(f"{e} {tail}", **last) from e
                    raise ApiUnreachable(f"{e} {tail}", **last) from e
                self._sleep(self.retry.delay(attempt, e.retry_after))
                attempt += 1

    # -- API ----------------------------------------------------------------------------------

    def create_bonuses_async(self, body: bytes, operation_id: str) -> dict[str, Any]:
        """POST a prepared JSON array of bonuses as one async operation. Not retried here.

        Returns the server's operation (checked: our id, a known status, USER_BONUS.BATCH_CREATE)."""
        params = {"async_mode": "true", "skip_invalid_items": "true", "operation_id": operation_id}
        return self._send("POST", "/user-bonuses", "submit", params=params, data=body,
                          check=lambda answer: _operation_problem(answer, operation_id))

    def get_operation(self, operation_id: str) -> dict[str, Any] | None:
        """The operation, or None only when the server says in its JSON 404 envelope that it does not exist.

        Any other answer that is not this bonus operation raises `ApiUnexpectedAnswer` (after retries)."""
        answer = self._get(f"/operations/{operation_id}", "poll", absent=True,
                           check=lambda answer: _operation_problem(answer, operation_id))
        return None if answer is _ABSENT else answer

    def get_operation_log(self, operation_id: str) -> list[dict[str, Any]]:
        """The operation's log as the server gave it: a list of objects (their content is not judged here)."""
        return self._get(f"/operations/{operation_id}/log", "log", check=_log_problem)

    def get_operation_log_entries(self, operation_id: str) -> list[LogEntry] | list[dict[str, Any]]:
        """`get_operation_log` decoded into only what mapping it to rows reads (`LogEntry`, `execute.map_log`);
        a log of another shape (an entry or echo that is not an object) comes back as plain JSON, checked alike."""
        return self._get(f"/operations/{operation_id}/log", "log", check=_log_problem, decode=_decode_log)

    def get_user_bonus(self, bonus_id: str) -> dict[str, Any] | None:
        """The bonus, or None only on a JSON 404 "does not exist" envelope."""
        answer = self._get(f"/user-bonuses/{bonus_id}", "bonus", absent=True,
                           check=lambda answer: _bonus_problem(answer, bonus_id))
        return None if answer is _ABSENT else answer

    def iter_user_bonuses(self, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every bonus matching the filters, paging by id as toloka-kit does."""
        params = {k: _param(v) for k, v in filters.items() if v is not None}
        params.update(sort="id", limit=300)
        yield from self._pages("/user-bonuses", "list", params)

    def iter_operations(self, *, limit: int = MAX_OPERATIONS_LIMIT, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every operation matching the filters (`type`, `status`, `id_gt`..., `submitted_gte`..., `finished_lt`...;
        datetimes are sent as naive UTC), paging `GET /operations` by id as toloka-kit's `get_operations` does
        (sort=id, then id_gt=<last id> while has_more). The operations are not judged beyond having an id."""
        params = {k: _param(v) for k, v in filters.items() if v is not None}
        params.update(sort="id", limit=max(1, min(int(limit), MAX_OPERATIONS_LIMIT)))
        yield from self._pages("/operations", "operations", params)

    def _pages(self, path: str, kind: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        cursor = None
        while True:
            page = self._get(path, kind, params=params, check=_page_problem)
            items = page["items"]
            yield from items
            if not page["has_more"]:
                return
            last = items[-1]["id"] if items else cursor
            if last == cursor:  # a listing we cannot finish is not a complete listing
                raise ApiUnexpectedAnswer(f"GET {path}: has_more, but the page does not get past id {last}")
            cursor = last
            params = {k: v for k, v in params.items() if k not in ("id_gt", "id_gte")}
            params["id_gt"] = last


# -- what a 2xx answer must look like -----------------------------------------------------------------

def _kind_of(answer: Any) -> str:
    return {dict: "object", list: "list", str: "string", type(None): "null", bool: "boolean"}.get(
        type(answer), "number")


def _same_id(got: str, asked: str) -> bool:
    if got == asked:
        return True
    try:  # the same UUID written another way (case, dashes) is the same operation
        return uuid.UUID(got) == uuid.UUID(asked)
    except ValueError:
        return False


def _operation_problem(answer: Any, operation_id: str) -> str | None:
    if not isinstance(answer, dict):
        return f"a JSON {_kind_of(answer)}, not an operation"
    op_id, status, op_type = answer.get("id"), answer.get("status"), answer.get("type", BONUS_OPERATION_TYPE)
    if not isinstance(op_id, str):
        return "an operation without a string id"
    if not _same_id(op_id, operation_id):
        return f"operation {op_id!r}, not the {operation_id!r} asked for"
    if status not in OPERATION_STATUSES:
        return f"an operation with status {status!r}, not one of {', '.join(sorted(OPERATION_STATUSES))}"
    if op_type != BONUS_OPERATION_TYPE:
        return f"an operation of type {op_type!r}, not {BONUS_OPERATION_TYPE}"
    return None


def _log_problem(answer: Any) -> str | None:
    if not isinstance(answer, list):
        return f"a JSON {_kind_of(answer)}, not an operation log (a list)"
    if not all(map(isinstance, answer, itertools.repeat((dict, LogEntry)))):  # (a C loop: 10,000 entries)
        return "a list holding something other than log entries (objects)"
    return None


def _bonus_problem(answer: Any, bonus_id: str) -> str | None:
    if not isinstance(answer, dict):
        return f"a JSON {_kind_of(answer)}, not a bonus"
    if str(answer.get("id")) != str(bonus_id):
        return f"bonus {answer.get('id')!r}, not the {bonus_id!r} asked for"
    return None


def _page_problem(answer: Any) -> str | None:
    if not isinstance(answer, dict) or not isinstance(answer.get("items"), list):
        return f"a JSON {_kind_of(answer)}, not a page of items"
    if not isinstance(answer.get("has_more"), bool):
        return "a page without a boolean has_more"
    if not all(isinstance(item, dict) and isinstance(item.get("id"), (str, int)) for item in answer["items"]):
        return "a page holding items without an id"
    return None


def _param(value: Any) -> Any:
    """Query values as Toloka expects them: datetimes as naive UTC ISO text, booleans as true/false."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


# -- what a non-2xx answer means ----------------------------------------------------------------------

def refuse_plain_http(url: str) -> str:
    """`url`, unless it is plain http:// to a host other than loopback: that would send the token in clear.

    Raises UsageError (exit 2) before any request."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() == "http" and not _is_loopback(parts.hostname or ""):
        raise UsageError(f"refusing plain http:// to {parts.hostname}: the token would cross the network in clear; "
                         "use https:// (http:// is only for a sandbox on loopback)")
    return url


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _error_from_response(method: str, path: str, resp: requests.Response, max_quota_wait_s: float) -> ApiError:
    """429 → RateLimited/QuotaExhausted; 408, 5xx → ApiTransientError; 401/403 → AuthRefused; any other
    status → ApiRejectedError only with Toloka's JSON envelope (or a 409 bare field map), else
    ApiUnexpectedAnswer (a proxy's HTML page, an empty body, a redirect...)."""
    try:
        body = orjson.loads(resp.content) if resp.content else None
    except orjson.JSONDecodeError:
        body = None
    status = resp.status_code
    envelope = body if isinstance(body, dict) else {}
    code = envelope.get("code") if isinstance(envelope.get("code"), str) and envelope.get("code") else None
    payload = envelope.get("payload")
    if code is None and status == 409 and envelope:
        # Toloka documents its 409 ENTITY_CONFLICT as a bare field map; accept that shape too.
        field_codes = [v.get("code") for v in envelope.values() if isinstance(v, dict)]
        code = next((c for c in field_codes if isinstance(c, str) and c), None)
        payload = envelope
    message = envelope.get("message") if code is not None else None
    text = f"{method} {path}: HTTP {status} {code or ''} {message or ''}".strip()
    request_id = envelope.get("request_id") if isinstance(envelope.get("request_id"), str) else None
    kwargs: dict[str, Any] = dict(status=status, code=code, payload=payload, request_id=request_id)
    if status == 429:
        interval = payload.get("interval") if isinstance(payload, dict) else None
        retry_after = _retry_after(resp) or QUOTA_SECONDS.get(interval or "", 1.0)
        if interval in ("HOUR", "DAY") or retry_after > max_quota_wait_s:
            return QuotaExhausted(text, retry_after=retry_after, **kwargs)
        return RateLimited(text, retry_after=retry_after, **kwargs)
    if status in (408,) or status >= 500:
        return ApiTransientError(text, **kwargs)
    if status in (401, 403):
        return AuthRefused(text, **kwargs)
    if code is None:
        return ApiUnexpectedAnswer(f"{text}: not a Toloka error answer ({_shape(resp)})", **kwargs)
    return ApiRejectedError(text, **kwargs)


def _retry_after(resp: requests.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _shape(resp: requests.Response) -> str:
    """What came back, without echoing it: content type and size."""
    return f"{resp.headers.get('Content-Type') or 'no content type'}, {len(resp.content)} bytes"


# -- the deadline: a watchdog that shuts an exchange's socket down when its time is up ------------------

class _Exchange:
    """One HTTP exchange under a deadline; `conn` is the urllib3 connection carrying it, once known."""

    __slots__ = ("deadline", "conn", "expired", "done")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.conn: HTTPConnection | None = None
        self.expired = False
        self.done = False


def _shut(conn: HTTPConnection) -> None:
    sock = getattr(conn, "sock", None)
    if sock is not None:
        try:  # the plain socket call, also for TLS: wakes the reader blocked in recv with EOF
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass


class _Watchdog:
    """One daemon thread for the process; at each armed exchange's deadline it marks it expired and shuts its
    socket down, which ends any blocked connect/read of that exchange with a connection error."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Exchange]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, exchange: _Exchange) -> None:
        with self._cond:
            heapq.heappush(self._heap, (exchange.deadline, next(self._seq), exchange))
            if self._thread is None or not self._thread.is_alive():  # first use, or after a fork
                self._thread = threading.Thread(target=self._run, name="toloka-deadline", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is exchange:
                self._cond.notify()

    def attach(self, exchange: _Exchange, conn: HTTPConnection) -> None:
        with self._cond:
            if not exchange.done:
                exchange.conn = conn
                if exchange.expired:
                    _shut(conn)

    def disarm(self, exchange: _Exchange) -> None:
        with self._cond:
            exchange.done = True
            exchange.conn = None

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                exchange = heapq.heappop(self._heap)[2]
                exchange.expired = True
                if exchange.conn is not None:
                    _shut(exchange.conn)


_WATCHDOG = _Watchdog()
_current = threading.local()  # .exchange: the exchange this thread is sending, if any


def _attach_current(conn: HTTPConnection) -> None:
    exchange = getattr(_current, "exchange", None)
    if exchange is not None:
        _WATCHDOG.attach(exchange, conn)


class _Watched:
    """Mixin for urllib3 connections: tells the watchdog which connection carries this thread's exchange
    (a reused one when the request starts, a new one once connected)."""

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        _attach_current(self)  # type: ignore[arg-type]

    def request(self, *args: Any, **kwargs: Any) -> None:
        _attach_current(self)  # type: ignore[arg-type]
        super().request(*args, **kwargs)  # type: ignore[misc]


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_WATCHED_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class _DeadlineAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections the deadline watchdog can shut (direct and HTTP(S)-proxied)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if manager.pool_classes_by_scheme is urllib3.poolmanager.pool_classes_by_scheme:  # not SOCKS: its own
            manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager
