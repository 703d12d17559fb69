"""Helpers for tests that check payouts through real parts: the server's own listing and counters, the ledger
file, the report folders, and `payout` as a real subprocess."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import IO, Any

import pandas as pd
import requests
from sandbox_fixtures import REPO, TOKEN, stats

from pipeline.report import read_rows

# -- the server's truth ------------------------------------------------------------------------------


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


def paid_on_server(url: str, token: str = TOKEN) -> Counter[tuple[str, str]]:
    """`paid_multiset` of everything the server at `url` holds now."""
    return paid_multiset(server_bonuses(url, token))


def request_count(url: str, endpoint: str | None = None) -> int:
    """API requests the sandbox has seen since it started: all of them, or one endpoint's (e.g.
    "GET /api/v1/operations", the listing a fresh ledger's recovery reads first)."""
    requests_seen = stats(url)["requests"]
    return int(sum(requests_seen.values()) if endpoint is None else requests_seen.get(endpoint, 0))


def post_count(url: str) -> int:
    """POST /user-bonuses requests the sandbox has seen since it started (faulted ones included)."""
    return request_count(url, "POST /api/v1/user-bonuses")


def fault_counts(url: str) -> dict[str, int]:
    """Faults the sandbox has injected since it started, by kind."""
    return dict(stats(url).get("faults", {}))


def operations_settled(url: str, at_least: int = 1) -> bool:
    """The sandbox holds at least `at_least` operations and every one it holds is finished (SUCCESS or FAIL)."""
    held = stats(url)["operations"]
    return sum(held.values()) >= at_least and set(held) <= {"SUCCESS", "FAIL"}


# -- the ledger and the reports ----------------------------------------------------------------------


def ledger_statuses(path: Path | str) -> dict[str, int]:
    """Rows per ledger status, plus `submitted`: planned rows whose operation the server already holds.

    Rows a fresh ledger recovered from other batches on the same server (batch '') are not counted. `path` may
    be a postgresql:// URL (a shared ledger)."""
    if isinstance(path, str):
        return _pg_statuses(path)
    if not path.exists():
        return {}
    with sqlite3.connect(path, timeout=30) as db:
        try:
            counts = dict(db.execute("SELECT status, count(*) FROM rows WHERE batch_id != '' GROUP BY status"
                                     ).fetchall())
            [(submitted,)] = db.execute(
                "SELECT count(*) FROM rows r JOIN operations o ON r.operation_id = o.operation_id"
                " WHERE r.status = 'planned' AND o.state = 'submitted'").fetchall()
        except sqlite3.OperationalError:  # killed before the schema existed
            return {}
    return {**counts, "submitted": submitted} if submitted else counts


def _pg_statuses(url: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(url) as db:
        if db.execute("SELECT to_regclass('rows')").fetchone() == (None,):
            return {}
        counts = dict(db.execute("SELECT status, count(*) FROM rows WHERE batch_id != '' GROUP BY status").fetchall())
        [(submitted,)] = db.execute(
            "SELECT count(*) FROM rows r JOIN operations o ON r.operation_id = o.operation_id"
            " WHERE r.status = 'planned' AND o.state = 'submitted'").fetchall()
    return {**counts, "submitted": submitted} if submitted else counts


def last_report(out: Path) -> Path:
    """The report folder of the last finished run (run ids sort by time; a killed run may leave none)."""
    done = sorted(p.parent for p in out.glob("*/summary.json"))
    assert done, f"no finished run under {out}"
    return done[-1]


def last_rows(out: Path) -> pd.DataFrame:
    """rows.parquet of the last finished run under `out`."""
    return read_rows(last_report(out))


# -- payout as a subprocess --------------------------------------------------------------------------


def payout_process(*args: str, cwd: Path = REPO, output: IO[bytes] | int | None = subprocess.DEVNULL,
                   token: str = TOKEN) -> subprocess.Popen[bytes]:
    """`python -m pipeline --log-json ARGS` as a real subprocess of this checkout, `TOLOKA_TOKEN` set; stdout and
    stderr both go to `output`."""
    env = {**os.environ, "TOLOKA_TOKEN": token,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, "-m", "pipeline", "--log-json", *args], env=env, cwd=cwd,
                            stdout=output, stderr=subprocess.STDOUT)
