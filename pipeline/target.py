"""Where a run sends: the API base URL, its token, and the identity the ledger is bound to."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.config import Settings
from pipeline.toloka import RetryPolicy, TolokaClient


@dataclass(frozen=True)
class Target:
    """A base URL and its token (the embedded sandbox gets a throwaway one).

    `identity` is what the ledger is bound to (Settings.target_id): the normalised base URL, or the embedded
    sandbox's db path, whose URL changes with every start.
    """

    api_url: str
    token: str
    label: str | None = None  # how reports name it, e.g. "embedded sandbox (data/sandbox.sqlite)"
    identity: str | None = None

    def ledger_id(self, settings: Settings) -> str:
        """What the ledger is bound to: this target's identity, else the settings' (Settings.target_id)."""
        return self.identity or settings.target_id


def make_client(target: Target, settings: Settings) -> TolokaClient:
    retry = RetryPolicy(max_retries=settings.max_retries, base_s=settings.backoff_base_s,
                        max_s=settings.backoff_max_s)
    return TolokaClient(target.api_url, target.token, timeout_s=settings.request_timeout_s, retry=retry,
                        deadline_s=settings.request_deadline_s, pool_size=settings.concurrency + 2)
