"""Helpers for tests that check payouts through the server's own listing."""

from __future__ import annotations

from collections import Counter
from typing import Any

import requests
from sandbox_fixtures import TOKEN


def server_bonuses(url: str, token: str = TOKEN) -> list[dict[str, Any]]:
    """Every bonus the server holds, read through its own listing API (paged by id)."""
    out: list[dict[str, Any]] = []
    params: dict[str, Any] = {"sort": "id", "limit": 300}
    while True:
        page = requests.get(f"{url}/api/v1/user-bonuses", params=params, timeout=30,
                            headers={"Authorization": f"OAuth {token}"}).json()
        out += page["items"]
        if not page["has_more"]:
            return out
        params["id_gt"] = page["items"][-1]["id"]


def paid_multiset(bonuses: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    """(user_id, amount as 2-decimal text) -> how many times the server paid it."""
    return Counter((b["user_id"], f"{b['amount']:.2f}") for b in bonuses)
