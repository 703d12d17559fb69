"""PostgreSQL under the ledger: a psycopg 3 connection that speaks the small part of sqlite3's API the ledger uses.

Why an adapter and not a second ledger: every ledger statement is written once (SQLite's dialect, `?`
placeholders) and translated here, so a change to a ledger method carries over to PostgreSQL unchanged. The
translation is deliberately small: `?` → `%s`, `INSERT OR IGNORE` → `ON CONFLICT DO NOTHING`, `BEGIN IMMEDIATE`
→ `BEGIN` (row locks and advisory locks replace SQLite's one writer), `CROSS JOIN t ON` (SQLite's join-order
hint) → `JOIN t ON`, `BLOB` → `BYTEA` in the schema. psycopg is imported only when a `postgresql://` ledger is
opened, so SQLite users never need it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pipeline.errors import UsageError

SCHEMES = ("postgresql://", "postgres://")
# Schema DDL that only PostgreSQL needs: SQLite's implicit rowid, which `Ledger.known_rows` reads (MAX(rowid) =
# how big the ledger is) to choose how to look keys up.
# Free space in each page lets an outcome update a row in place (a HOT update, no new entry in any of the rows'
# six indexes): the intent → outcome path writes each row twice.
EXTRA_DDL = (
    "ALTER TABLE rows ADD COLUMN IF NOT EXISTS rowid BIGSERIAL",
    "CREATE INDEX IF NOT EXISTS rows_by_rowid ON rows(rowid)",
    "ALTER TABLE rows SET (fillfactor = 60)",
    "ALTER TABLE operations SET (fillfactor = 50)",
)


def is_url(location: object) -> bool:
    return isinstance(location, str) and location.lower().startswith(SCHEMES)


def redacted(url: str) -> str:
    """The URL without its password (it may appear in logs, reports and messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@functools.lru_cache(maxsize=1024)
def translate(sql: str, with_params: bool = True) -> str:
    """One ledger statement in PostgreSQL's dialect (see the module docstring for what changes)."""
    s = sql.strip()
    if s.upper() == "BEGIN IMMEDIATE":
        return "BEGIN"
    if s.upper().startswith("INSERT OR IGNORE INTO"):
        s = "INSERT INTO" + s[len("INSERT OR IGNORE INTO"):] + " ON CONFLICT DO NOTHING"
    s = re.sub(r"\bCROSS JOIN (\w+(?: \w+)?) ON\b", r"JOIN \1 ON", s)
    s = re.sub(r"\bBLOB\b", "BYTEA", s)
    if with_params:
        s = s.replace("%", "%%").replace("?", "%s")
    return s


class PgConnection:
    """psycopg 3 in autocommit mode (the ledger issues BEGIN/COMMIT itself, as with sqlite3's isolation_level=None)."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.url = url
        try:
            self._conn = psycopg.connect(url, autocommit=True, connect_timeout=10,
                                         application_name="payout")
        except psycopg.Error as e:
            raise UsageError(f"ledger {redacted(url)} cannot be opened: {str(e).strip()}; check the URL, the server "
                             "and the credentials (PGPASSWORD or ~/.pgpass)") from None
        self._conn.execute("SET client_min_messages = warning")  # no NOTICE for IF NOT EXISTS

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        return self._conn.info.transaction_status != TransactionStatus.IDLE

    def execute(self, sql: str, parameters: Any = ()) -> Any:
        cur = self._conn.cursor()
        if parameters:
            cur.execute(translate(sql), parameters)
        else:
            cur.execute(translate(sql, False))
        return cur

    def executemany(self, sql: str, parameters: Iterable[Any]) -> Any:
        cur = self._conn.cursor()
        cur.executemany(translate(sql), parameters)
        return cur

    def close(self) -> None:
        self._conn.close()
