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
import zlib
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


_PLAIN_INSERT = re.compile(r"^INSERT INTO (\w+)\s*(?:\(([\w\s,]+)\))?\s*VALUES\s*\(\s*\?(?:\s*,\s*\?)*\s*\)$",
                           re.IGNORECASE)


_UPSERT = re.compile(r"^INSERT INTO (\w+)\s*\(([\w\s,]+)\)\s*VALUES\s*\(\s*\?(?:\s*,\s*\?)*\s*\)\s*(ON CONFLICT\b.*)$",
                     re.IGNORECASE | re.DOTALL)


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
        """A plain multi-row INSERT (no ON CONFLICT: the same semantics) goes by COPY, ~10x fewer round trips'
        worth of server work than one INSERT per row; e.g. the keys `known_rows` looks up in a temp table."""
        cur = self._conn.cursor()
        plain = _PLAIN_INSERT.match(sql.strip())
        if plain:
            table, columns = plain.group(1), plain.group(2)
            with cur.copy(f"COPY {table}{f' ({columns})' if columns else ''} FROM STDIN") as copy:
                for row in parameters:
                    copy.write_row(row)
            return cur
        upsert = _UPSERT.match(sql.strip())
        if upsert and self.in_transaction:
            # An upsert of many rows (intent): COPY them into a session-temporary copy of the columns, then ONE
            # INSERT ... SELECT with the same ON CONFLICT clause. Same result for distinct keys (every caller's
            # rows are: one row per row key / operation id); a key twice in one call raises (rolled back, nothing
            # sent) where row-by-row would apply both.
            table, columns, conflict = upsert.group(1), upsert.group(2), upsert.group(3)
            stage = f"stage_{table}_{zlib.crc32(columns.encode()):08x}"
            cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {stage} AS SELECT {columns} FROM {table} WITH NO DATA")
            cur.execute(f"TRUNCATE {stage}")
            with cur.copy(f"COPY {stage} ({columns}) FROM STDIN") as copy:
                for row in parameters:
                    copy.write_row(row)
            cur.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {stage} {conflict}")
            return cur
        cur.executemany(translate(sql), parameters)
        return cur

    def close(self) -> None:
        self._conn.close()
