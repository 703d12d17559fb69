"""Shared fixtures: a sandbox server over real HTTP, and `payout` invoked as a user would."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sandbox_fixtures import TOKEN, sandbox, sandbox_process  # noqa: E402,F401  (re-exported fixtures)

from pipeline.cli import main  # noqa: E402


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
