"""The one edge to the network: a requests.Session client for Toloka's user-bonuses and operations API.

No `requests` exception escapes this module: every failure becomes an `ApiError` subclass that says
whether asking again is safe (`ApiTransientError`) or the server refused for good (`ApiRejectedError`).
GETs are retried here with backoff; POSTs are never retried here, because only the caller knows how to
check whether an earlier attempt reached the server (see `execute.py`).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import requests
from requests.adapters import HTTPAdapter

from pipeline.errors import (
    ApiError,
    ApiRejectedError,
    ApiTransientError,
    ApiUnreachable,
    AuthRefused,
    QuotaExhausted,
)

QUOTA_SECONDS = {"MIN": 60.0, "HOUR": 3600.0, "DAY": 86400.0}


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
    """Thread-safe client: one Session per thread, all sharing the same settings."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout_s: float = 10.0,
        retry: RetryPolicy = RetryPolicy(),
        pool_size: int = 8,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._auth = f"OAuth {token}"
        self.timeout_s = timeout_s
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
            adapter = HTTPAdapter(pool_connections=1, pool_maxsize=self._pool_size, max_retries=0)
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

    def _send(self, method: str, path: str, kind: str, **kwargs: Any) -> Any:
        """One HTTP exchange; returns parsed JSON, or raises a translated `ApiError`."""
        self._count(kind)
        url = f"{self.base_url}/api/v1{path}"
        try:
            resp = self._session().request(method, url, timeout=self.timeout_s, **kwargs)
        except requests.Timeout as e:
            raise ApiTransientError(f"{method} {path}: timed out after {self.timeout_s:g} s") from e
        except requests.RequestException as e:
            raise ApiTransientError(f"{method} {path}: connection failed ({type(e).__name__})") from e
        if resp.status_code < 300:
            try:
                return orjson.loads(resp.content)
            except orjson.JSONDecodeError as e:
                raise ApiTransientError(f"{method} {path}: response is not JSON") from e
        raise _error_from_response(method, path, resp)

    def _get(self, path: str, kind: str, params: dict[str, Any] | None = None) -> Any:
        """GET with retries on transient errors; quota waits beyond the policy raise `QuotaExhausted`."""
        attempt = 0
        while True:
            try:
                return self._send("GET", path, kind, params=params)
            except QuotaExhausted:
                raise
            except ApiTransientError as e:
                if attempt >= self.retry.max_retries:
                    raise ApiUnreachable(f"{e} (gave up after {attempt + 1} attempts)") from e
                self._sleep(self.retry.delay(attempt, getattr(e, "retry_after", None)))
                attempt += 1

    # -- API ----------------------------------------------------------------------------------

    def create_bonuses_async(self, body: bytes, operation_id: str) -> dict[str, Any]:
        """POST a prepared JSON array of bonuses as one async operation. Not retried here."""
        params = {"async_mode": "true", "skip_invalid_items": "true", "operation_id": operation_id}
        return self._send("POST", "/user-bonuses", "submit", params=params, data=body)

    def get_operation(self, operation_id: str) -> dict[str, Any] | None:
        """The operation, or None when the server has never heard of it (404)."""
        return self._get_or_none(f"/operations/{operation_id}", "poll")

    def get_operation_log(self, operation_id: str) -> list[dict[str, Any]]:
        return self._get(f"/operations/{operation_id}/log", "log")

    def get_user_bonus(self, bonus_id: str) -> dict[str, Any] | None:
        return self._get_or_none(f"/user-bonuses/{bonus_id}", "bonus")

    def _get_or_none(self, path: str, kind: str) -> Any:
        try:
            return self._get(path, kind)
        except ApiRejectedError as e:
            if e.status == 404:
                return None
            raise

    def iter_user_bonuses(self, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every bonus matching the filters, paging by id as toloka-kit does."""
        params = {k: v for k, v in filters.items() if v is not None}
        params.update(sort="id", limit=300)
        while True:
            page = self._get("/user-bonuses", "list", params=params)
            yield from page["items"]
            if not page.get("has_more") or not page["items"]:
                return
            params = {k: v for k, v in params.items() if k not in ("id_gt", "id_gte")}
            params["id_gt"] = page["items"][-1]["id"]


def _error_from_response(method: str, path: str, resp: requests.Response) -> ApiError:
    try:
        body = orjson.loads(resp.content) if resp.content else {}
    except orjson.JSONDecodeError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    code = body.get("code")
    payload = body.get("payload")
    if code is None and body:
        # Toloka documents its 409 ENTITY_CONFLICT as a bare field map; accept that shape too.
        field_codes = [v.get("code") for v in body.values() if isinstance(v, dict)]
        code = next((c for c in field_codes if c), None)
        payload = body
    status = resp.status_code
    text = f"{method} {path}: HTTP {status} {code or ''} {body.get('message', '')}".strip()
    kwargs = dict(status=status, code=code, payload=payload, request_id=body.get("request_id"))
    if status == 429:
        interval = payload.get("interval") if isinstance(payload, dict) else None
        retry_after = _retry_after(resp) or QUOTA_SECONDS.get(interval or "", 1.0)
        if interval in ("HOUR", "DAY") or retry_after > RetryPolicy.max_quota_wait_s:
            return QuotaExhausted(text, retry_after=retry_after, **kwargs)
        err = ApiTransientError(text, **kwargs)
        err.retry_after = retry_after  # type: ignore[attr-defined]
        return err
    if status in (408,) or status >= 500:
        return ApiTransientError(text, **kwargs)
    if status in (401, 403):
        return AuthRefused(text, **kwargs)
    return ApiRejectedError(text, **kwargs)


def _retry_after(resp: requests.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
