"""One exception root for the whole pipeline; each error carries the exit code the CLI returns."""

from __future__ import annotations

from typing import Any


class PayoutError(Exception):
    """Base of every error the CLI turns into a message and an exit code (never a traceback)."""

    exit_code = 2


class UsageError(PayoutError, ValueError):
    """Bad command line or configuration."""


class SheetError(PayoutError, ValueError):
    """A sheet cannot be read at all (missing file, unknown format, required column absent)."""


class SpendRefused(PayoutError):
    """The spend guard refused the plan (over a cap, over the confirmation threshold, or a --confirm-total that
    differs from the planned total): nothing recorded, nothing sent."""


class LedgerLocked(PayoutError, BlockingIOError):
    """Another run holds the ledger's writer lock."""

    exit_code = 4


class ApiError(PayoutError):
    """Anything the Toloka API (or the network in front of it) said or failed to say."""

    exit_code = 3
    # Seconds the server asked us to wait before asking again; set only on `RateLimited`.
    retry_after: float | None = None

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        payload: Any = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.payload = payload
        self.request_id = request_id


class ApiTransientError(ApiError, ConnectionError):
    """Outcome unknown or temporarily refused (connection error, timeout, 5xx, 429): safe to ask again."""


class ApiUnexpectedAnswer(ApiTransientError):
    """The server answered, but not with anything we can trust as definitive (a 2xx that is not JSON or not
    the object asked for, an HTML 404 from a proxy, ...). The outcome is unknown: ask the server again; never
    resend blind, never mark rows failed on it."""


class RateLimited(ApiTransientError):
    """429: asking again is safe, but not before `retry_after` seconds."""

    def __init__(self, message: str, *, retry_after: float, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class QuotaExhausted(RateLimited):
    """The daily (or hourly) request quota is spent: stop cleanly and re-run after `retry_after` seconds."""


class ApiRejectedError(ApiError):
    """The server answered with a definite refusal: a 4xx (other than 408/429) carrying Toloka's JSON error
    envelope with a `code` (or its documented bare 409 field map)."""


class AuthRefused(ApiRejectedError, PermissionError):
    """401/403: the token is missing, wrong, or lacks access."""


class ApiUnreachable(ApiTransientError):
    """Retries exhausted without any answer from the server."""


class OperationTimeout(ApiTransientError):
    """An operation did not finish within `max_wait_s`: its rows stay pending and the next run resumes it."""


class StopRequested(PayoutError):
    """A signal asked the run to stop: sending stopped, open operations are resumed by the next run."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by signal {signum}; operations still open are resumed by the next run")
        self.exit_code = 128 + signum


# What the operator should do, by error class; `next_step` takes the most specific class an error is (its MRO).
_NEXT_STEPS: dict[type[BaseException], str] = {
    AuthRefused: "the token was refused: fix TOLOKA_TOKEN (or the file TOLOKA_TOKEN_FILE names) and run the same "
                 "command again; nothing is paid twice",
    QuotaExhausted: "the request quota is spent: run the same command again after the time given; nothing is paid "
                    "twice",
    OperationTimeout: "an operation is still running at Toloka: run the same command again later to resume it",
    ApiTransientError: "the API did not answer usably: check the network and --api-url, then run the same command "
                       "again",
    ApiRejectedError: "the API refused the request: see the message; the rows stay as reported",
    StopRequested: "stopped by a signal: run the same command again to resume",
    LedgerLocked: "another payout run holds the ledger: wait for it (or use --lock-timeout)",
}


def next_step(error: BaseException) -> str:
    """What the operator should do about `error`, in words: each exit code a scheduler alerts on has its own."""
    return next((_NEXT_STEPS[c] for c in type(error).__mro__ if c in _NEXT_STEPS),
                "fix what the message names and run the same command again")
