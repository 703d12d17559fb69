"""One place decides how logs look (console on a TTY, JSON lines otherwise) and keeps the OAuth token out of them."""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, WrappedLogger

REDACTED = "***"
_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_PLAIN = (int, float, bool, type(None))


def set_secret(secret: str | None) -> None:
    """Register a string (e.g. the OAuth token) to be replaced by *** in every later log event; empty is ignored."""
    if secret:
        with _secrets_lock:
            _secrets.add(secret)


def configure_logging(*, json: bool | None = None, level: str = "info", stream: TextIO | None = None) -> bool:
    """Route structlog to `stream`: console if json is None and stream is a TTY, else JSON lines; True for JSON.

    Raises ValueError on an unknown level.
    """
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    if json is None:
        json = not _isatty(sys.stderr if stream is None else stream)
    out: Any = _CurrentStderr() if stream is None else stream
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(ensure_ascii=False) if json else structlog.dev.ConsoleRenderer(colors=_isatty(out))
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            # Tracebacks become text before redaction, so a token inside an exception message is scrubbed too.
            structlog.processors.format_exc_info,
            redact_secrets,
            with_run_ids,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    return json


_main_ids: dict[str, Any] = {}


def with_run_ids(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Processor: every line carries `run_id` and `batch_id` (null before a run has them), so a scheduler's
    log search by run finds its errors too. Worker threads do not inherit the main thread's context
    variables: their lines take the ids of the main thread's latest line (one run per process at a time)."""
    if threading.current_thread() is threading.main_thread():
        event_dict.setdefault("run_id", None)
        event_dict.setdefault("batch_id", None)
        _main_ids.update(run_id=event_dict["run_id"], batch_id=event_dict["batch_id"])
    else:
        for key in ("run_id", "batch_id"):
            event_dict.setdefault(key, _main_ids.get(key))
    return event_dict


def redact_secrets(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Processor: replace every registered secret in keys and values, recursing into dicts, lists and tuples."""
    with _secrets_lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    if not secrets:
        return event_dict
    return {_scrub(k, secrets): _scrub(v, secrets) for k, v in event_dict.items()}


def scrub(text: str) -> str:
    """`text` with every registered secret replaced: for what is printed or written outside structlog."""
    with _secrets_lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    return _scrub(text, secrets) if secrets else text


def _scrub(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, dict):
        return {_scrub(k, secrets): _scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(v, secrets) for v in value]
    # Any other object (an exception, a request) is rendered via repr/str later; scrub that text now if it leaks.
    text = repr(value)
    shown = str(value) if isinstance(value, BaseException) else text
    if any(s in text or s in shown for s in secrets):
        return _scrub(f"{type(value).__name__}: {shown}" if isinstance(value, BaseException) else text, secrets)
    return value


class _CurrentStderr:
    """Writes to whatever sys.stderr is at each write (pytest swaps it per test; a stream bound once goes stale)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return _isatty(sys.stderr)


def _isatty(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())
