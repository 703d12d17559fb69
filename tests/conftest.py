"""Shared fixtures: a sandbox server over real HTTP, and `payout` invoked as a user would."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sandbox_fixtures import TOKEN, sandbox, sandbox_process  # noqa: E402,F401  (re-exported fixtures)

from pipeline.cli import main  # noqa: E402


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


@pytest.fixture
def payout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Run `payout ...` in-process with a tmp ledger and report folder; returns the exit code."""
    monkeypatch.setenv("TOLOKA_TOKEN", TOKEN)

    def run(*args: str, ledger: Path | None = None, out: Path | None = None) -> int:
        cmd, rest = args[0], list(args[1:])
        if cmd in ("run", "retry", "audit"):
            rest += ["--ledger", str(ledger or tmp_path / "ledger.sqlite"), "--out", str(out or tmp_path / "reports")]
        return main(["--log-json", cmd, *rest])

    return run
