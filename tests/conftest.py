"""Shared fixtures: a sandbox server over real HTTP, `payout` invoked as a user would, and a hermetic home.

Every test gets its own data folder ($PAYOUT_DATA_DIR), HOME and XDG_DATA_HOME under tmp, so no test (nor any
`payout` subprocess it starts, which inherits the environment) reads or writes the real ~/.local/share/payout.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pg_server import pg_server, pg_url  # noqa: E402,F401  (re-exported fixtures: a throwaway PostgreSQL)
from sandbox_fixtures import TOKEN, sandbox, sandbox_process  # noqa: E402,F401  (re-exported fixtures)

from pipeline.cli import main  # noqa: E402


@pytest.fixture(autouse=True)
def hermetic_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$PAYOUT_DATA_DIR, HOME and XDG_DATA_HOME point into this test's tmp folder; returns the data folder."""
    data = tmp_path / "payout-data"
    monkeypatch.setenv("PAYOUT_DATA_DIR", str(data))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    return data


def sheets_of(args: list[str]) -> list[str]:
    """The SHEET arguments of a `run` command line: the positionals before the first flag."""
    out = []
    for a in args:
        if a.startswith("-"):
            break
        out.append(a)
    return out


def needs_batch_id(args: list[str]) -> bool:
    """Every target but the embedded sandbox needs an explicit --batch-id."""
    if "--batch-id" in args:
        return False
    if "--api-url" in args:
        return True
    return "--env" in args and args[args.index("--env") + 1] != "local"


def default_test_batch_id(args: list[str]) -> str:
    """What the embedded sandbox would default to: the sorted sheet stems joined by '+'."""
    return "+".join(sorted(Path(s).stem for s in sheets_of(args)))


@pytest.fixture
def payout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Run `payout ...` in-process with a tmp ledger and report folder; returns the exit code.

    A `run` against a target that needs --batch-id gets the sorted sheet stems unless the test passes one.
    """
    monkeypatch.setenv("TOLOKA_TOKEN", TOKEN)

    def run(*args: str, ledger: Path | None = None, out: Path | None = None) -> int:
        cmd, rest = args[0], list(args[1:])
        if cmd == "run" and needs_batch_id(rest):
            rest += ["--batch-id", default_test_batch_id(rest)]
        if cmd in ("run", "retry", "audit", "recover"):
            rest += ["--ledger", str(ledger or tmp_path / "ledger.sqlite"), "--out", str(out or tmp_path / "reports")]
        return main(["--log-json", cmd, *rest])

    return run
