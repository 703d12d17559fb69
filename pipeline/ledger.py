"""The journal that makes payouts exactly-once: a row's status in the ledger *is* its state.

Every transition is one function and one transaction. Intent (rows + operation id) is committed before
any request is sent. Two backends behind one set of statements, chosen by the location:
- a path: SQLite in WAL mode with synchronous=FULL, so what a commit says survives a kill -9 or a power
  cut; one writer at a time: an exclusive `flock` on `<ledger>.lock`;
- `postgresql://...`: a shared ledger (pipeline/ledger_pg.py translates the statements); many `payout run`
  workers share a batch: planning under an advisory lock (the first planner writes the whole plan, the
  others find it), each open operation claimed by one worker (`FOR UPDATE SKIP LOCKED`) for a lease that
  its worker renews; a dead worker's claim expires and another resumes the operation (asking the server
  by operation id first, see execute.py).
The schema is versioned (`meta.schema_version`): an older ledger is upgraded in one transaction, a newer
one refused.
"""

from __future__ import annotations

import fcntl
import os
import re
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import orjson
import pandas as pd

from pipeline.contract import MAY_BE_PAID, OperationState, RowState
from pipeline.errors import LedgerLocked, UsageError
from pipeline.ledger_pg import is_url, redacted

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id      TEXT PRIMARY KEY,   -- sortable by time
    batch_id    TEXT,
    kind        TEXT NOT NULL,      -- run | retry
    started     TEXT NOT NULL,
    finished    TEXT,
    outcome     TEXT,               -- exit summary, e.g. "paid 120, failed 2"
    meta        TEXT,
    sheet_rows  INTEGER,            -- rows its sheets held
    to_plan     INTEGER,            -- rows it had to plan (new and failed)
    planned     INTEGER             -- rows whose intent it committed: < to_plan means some were never planned
);
CREATE TABLE IF NOT EXISTS rows (
    row_key      TEXT PRIMARY KEY,
    batch_id     TEXT NOT NULL,
    run_id       TEXT NOT NULL,     -- last run that planned it
    source_file  TEXT,
    source_row   INTEGER,
    user_id      TEXT NOT NULL,
    amount_cents INTEGER NOT NULL,
    item         BLOB NOT NULL,     -- the exact JSON object sent for this row (without __item_idx)
    status       TEXT NOT NULL,     -- planned | paid | failed | unknown | superseded (see RowState)
    attempt      INTEGER NOT NULL,
    operation_id TEXT,
    bonus_id     TEXT,
    errors       TEXT,              -- JSON list of {column, code, message}
    retryable    INTEGER NOT NULL DEFAULT 0,
    paid_run_id  TEXT,
    updated      TEXT NOT NULL,
    content_key  TEXT,              -- the bonus without its bonus_key (keys.py); = row_key without one
    lookalike    TEXT,              -- batch-free 409 identity (keys.lookalike_keys): the look-alike guard
    paid_at      TEXT               -- when the server's log showed it paid (or the operation finished)
);
CREATE INDEX IF NOT EXISTS rows_by_op ON rows(operation_id);
-- Not indexed by status: every outcome would then rewrite index entries; batches are scanned instead.
CREATE INDEX IF NOT EXISTS rows_by_batch ON rows(batch_id);
CREATE TABLE IF NOT EXISTS operations (
    operation_id TEXT PRIMARY KEY,
    batch_id     TEXT NOT NULL,
    run_id       TEXT NOT NULL,
    chunk_no     INTEGER,
    attempt      INTEGER NOT NULL,
    item_count   INTEGER NOT NULL,
    state        TEXT NOT NULL,     -- planned | submitted | done | rejected
    status       TEXT,              -- Toloka's: PENDING | RUNNING | SUCCESS | FAIL
    submitted    TEXT,
    started      TEXT,
    finished     TEXT,
    progress     INTEGER,
    details      TEXT,
    updated      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ops_open ON operations(state);
"""
# meta comes first: it holds the schema version, read before anything else is created
META = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
# Columns added after the first release: an older ledger gains them (NULL) when opened.
MIGRATIONS = (
    ("rows", "content_key", "TEXT"), ("rows", "lookalike", "TEXT"), ("rows", "paid_at", "TEXT"),
    ("runs", "sheet_rows", "INTEGER"), ("runs", "to_plan", "INTEGER"), ("runs", "planned", "INTEGER"),
    # version 3: which worker holds an open operation, and until when (PostgreSQL's server clock)
    ("operations", "claimed_by", "TEXT"), ("operations", "claim_until", "{timestamp}"),
)
# 1: the first release; 2: + content keys, look-alikes, run counts (both unversioned); 3: versioned, + claims.
# An unversioned ledger is 1 or 2: every missing column is added (NULL), in the same transaction as the rest.
SCHEMA_VERSION = 3
MIGRATION_LOCK = 0x7061796F7574  # pg_advisory_xact_lock key: workers opening a fresh database at once
PLANNING_LOCK = 0x706C616E  # pg_advisory_lock key: one planner of a shared ledger at a time
POST_MIGRATION = """
DROP INDEX IF EXISTS rows_by_content;
-- only rows keyed by a bonus_key have a content key of their own; the rest are found by row_key
CREATE INDEX IF NOT EXISTS rows_by_bonus_content ON rows(content_key) WHERE content_key != row_key;
CREATE INDEX IF NOT EXISTS rows_by_lookalike ON rows(lookalike);
"""


def _statements(script: str) -> list[str]:
    """The statements of a DDL script, comments dropped (they may hold ';'); executescript would COMMIT."""
    text = re.sub(r"--[^\n]*", "", script)
    return [s.strip() for s in text.split(";") if s.strip()]


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def __iter__(self) -> Iterator[Any]: ...
    def fetchall(self) -> list[Any]: ...
    def fetchone(self) -> Any: ...


class Connection(Protocol):
    """What the ledger needs of a connection: sqlite3's, or ledger_pg.PgConnection's imitation of it."""

    @property
    def in_transaction(self) -> bool: ...
    def execute(self, sql: str, parameters: Any = ..., /) -> Cursor: ...
    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Any: ...
    def close(self) -> None: ...


_MAY_BE_PAID_SQL = ",".join(f"'{s}'" for s in MAY_BE_PAID)
DETAIL_COUNTS = ("total_count", "valid_count", "not_valid_count", "success_count", "failed_count")


def utcnow() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Operation:
    """One planned or submitted bulk submission, as the ledger knows it."""

    operation_id: str
    batch_id: str
    run_id: str
    chunk_no: int
    attempt: int
    item_count: int
    state: OperationState


@dataclass(frozen=True)
class RowResult:
    """What the operation log says about one row."""

    row_key: str
    status: RowState
    bonus_id: str | None = None
    errors: list[dict[str, str]] | None = None
    retryable: bool = False


class Ledger:
    """Open with `with Ledger(location) as ledger:`; a path is SQLite (raises `LedgerLocked` if another process
    holds it), a `postgresql://` URL is a shared ledger (see the module docstring).

    `lock=False` is for readers that never write intent (dry runs, reports, audits).
    """

    def __init__(self, path: str | Path, *, lock: bool = True) -> None:
        self.url = str(path) if is_url(path) else None
        self.path = Path(path) if self.url is None else None
        self.label = redacted(self.url) if self.url is not None else str(self.path)
        self.lock = lock
        self._lock_fd: int | None = None
        self._db: Connection | None = None
        self._mutex = threading.Lock()
        self._planning = False

    @property
    def shared(self) -> bool:
        """True on PostgreSQL: many workers share the ledger's open operations (claims), none locks it whole."""
        return self.url is not None

    def __enter__(self) -> Ledger:
        try:
            if self.url is not None:
                from pipeline.ledger_pg import PgConnection

                self._db = PgConnection(self.url)
                self._migrate()
                return self
            assert self.path is not None
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.lock:
                self._acquire_lock()
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db = db
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=10000")
            db.execute("PRAGMA cache_size=-65536")  # 64 MiB: intent of 100k rows stays in memory
            self._migrate()
        except (LedgerLocked, UsageError):
            self.__exit__()
            raise
        except (OSError, sqlite3.OperationalError) as e:
            self.__exit__()
            raise UsageError(f"ledger {self.label} cannot be opened for writing ({e}); check the folder's "
                             "permissions or choose another place with --ledger / --data-dir") from None
        except Exception as e:  # psycopg's errors: psycopg is imported only for a PostgreSQL ledger
            self.__exit__()
            if type(e).__module__.startswith("psycopg"):
                raise UsageError(f"ledger {self.label} cannot be opened ({str(e).strip()})") from None
            raise
        return self

    def _migrate(self) -> None:
        """Bring the schema to SCHEMA_VERSION in ONE transaction, or refuse a ledger written by a newer payout.

        Nothing is half-upgraded: SQLite and PostgreSQL both roll DDL back. On PostgreSQL an advisory lock
        makes workers that open a fresh database at the same moment take turns.
        """
        if self._schema_version() == SCHEMA_VERSION:  # the usual case: no write lock (a reader never waits)
            return
        with self._mutex:
            db = self.db
            db.execute("BEGIN IMMEDIATE")
            try:
                if self.url is not None:
                    db.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
                db.execute(META)
                row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                version = int(row[0]) if row else None
                if version is not None and version > SCHEMA_VERSION:
                    raise UsageError(f"ledger {self.label} has schema version {version}, newer than this payout "
                                     f"knows ({SCHEMA_VERSION}): upgrade payout; the ledger was not changed")
                if version != SCHEMA_VERSION:
                    self._upgrade(db)
                    db.execute("INSERT INTO meta(key, value) VALUES ('schema_version', ?) ON CONFLICT(key) DO UPDATE"
                               " SET value=excluded.value", (str(SCHEMA_VERSION),))
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _schema_version(self) -> int | None:
        try:
            row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except Exception:  # no meta table yet (a fresh ledger); PostgreSQL: leave no failed transaction behind
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            return None
        return int(row[0]) if row else None

    def _upgrade(self, db: Connection) -> None:
        """Create what is missing (fresh ledger) and add every column a ledger of an older version lacks."""
        timestamp = "TIMESTAMPTZ" if self.url is not None else "TEXT"
        for statement in _statements(SCHEMA):
            db.execute(statement)
        for table, column, kind in MIGRATIONS:
            if column not in self._columns(db, table):
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind.format(timestamp=timestamp)}")
        for statement in _statements(POST_MIGRATION):
            db.execute(statement)
        if self.url is not None:
            from pipeline.ledger_pg import EXTRA_DDL

            for statement in EXTRA_DDL:
                db.execute(statement)

    def _columns(self, db: Connection, table: str) -> set[str]:
        if self.url is not None:
            return {r[0] for r in db.execute("SELECT column_name FROM information_schema.columns WHERE"
                                             " table_schema = current_schema() AND table_name=?", (table,)).fetchall()}
        return {r[1] for r in db.execute(f"PRAGMA table_info({table})").fetchall()}

    def __exit__(self, *exc: object) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def _acquire_lock(self) -> None:
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LedgerLocked(
                f"ledger {self.path} is in use by another payout run; wait for it to finish "
                "(nothing was sent by this one)"
            ) from None
        self._lock_fd = fd

    @property
    def db(self) -> Connection:
        assert self._db is not None, "Ledger used outside its `with` block"
        return self._db

    def _tx(self, statements: Iterable[tuple[str, Any, bool]]) -> int:
        """Run (sql, params, many) statements in one IMMEDIATE transaction; returns the rows the first one changed."""
        with self._mutex:
            self.db.execute("BEGIN IMMEDIATE")
            changed = -1
            try:
                for sql, params, many in statements:
                    cursor = (self.db.executemany if many else self.db.execute)(sql, params)
                    changed = cursor.rowcount if changed < 0 else changed
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
            return changed

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._mutex:
            return self.db.execute(sql, params).fetchall()

    # -- what the ledger belongs to -----------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key=?", (key,))
        return rows[0][0] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        self._tx([("INSERT INTO meta(key, value) VALUES (?,?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                   (key, value), False)])

    def bind_target(self, target_id: str) -> bool:
        """Tie the ledger to one API target; True while it has never read that target's operations (the
        caller recovers first: a recovery that did not finish is done again by the next run).

        A ledger of one target used against another would call rows paid that the other never paid.
        """
        known = self.get_meta("target")
        if known is None:
            self.set_meta("target", target_id)
        elif known != target_id:
            raise UsageError(f"ledger {self.label} belongs to target {known}, not {target_id}; use that "
                             "target's own ledger (--ledger or --data-dir)")
        return self.get_meta("recovered_through") is None

    # -- runs ---------------------------------------------------------------------------------

    def start_run(self, run_id: str, batch_id: str | None, kind: str, meta: dict[str, Any], *,
                  sheet_rows: int | None = None, to_plan: int | None = None) -> None:
        self._tx([("INSERT INTO runs(run_id, batch_id, kind, started, meta, sheet_rows, to_plan, planned)"
                   " VALUES (?,?,?,?,?,?,?,0)",
                   (run_id, batch_id, kind, utcnow(), orjson.dumps(meta).decode(), sheet_rows, to_plan), False)])

    def unplanned_runs(self, batch_id: str | None = None) -> list[tuple[str, str, int]]:
        """(run_id, batch_id, rows never planned) of each batch's latest sheet run that stopped before planning
        every row it had to: nothing but a new `payout run` of the sheet plans them."""
        sql = ("SELECT run_id, batch_id, to_plan - planned FROM runs r WHERE kind='run' AND to_plan > planned"
               " AND run_id = (SELECT MAX(run_id) FROM runs WHERE kind='run' AND batch_id=r.batch_id)")
        return self._query(sql + (" AND batch_id=?" if batch_id else ""), (batch_id,) if batch_id else ())

    def finish_run(self, run_id: str, outcome: str) -> None:
        self._tx([("UPDATE runs SET finished=?, outcome=? WHERE run_id=?", (utcnow(), outcome, run_id), False)])

    def latest_run(self, kind: str | None = None) -> dict[str, Any] | None:
        sql = "SELECT run_id, batch_id, kind, started, finished, outcome FROM runs"
        sql += " WHERE kind=?" if kind else ""
        rows = self._query(sql + " ORDER BY run_id DESC LIMIT 1", (kind,) if kind else ())
        keys = ("run_id", "batch_id", "kind", "started", "finished", "outcome")
        return dict(zip(keys, rows[0])) if rows else None

    def run_info(self, run_id: str) -> dict[str, Any] | None:
        rows = self._query("SELECT run_id, batch_id, kind, started, finished, outcome FROM runs WHERE run_id=?",
                           (run_id,))
        keys = ("run_id", "batch_id", "kind", "started", "finished", "outcome")
        return dict(zip(keys, rows[0])) if rows else None

    # -- rows ---------------------------------------------------------------------------------

    def known_rows(self, row_keys: Sequence[str]) -> pd.DataFrame:
        """Ledger state of these keys: row_key, status, attempt, operation_id, bonus_id, paid_run_id.

        Why three paths: an empty ledger (first run of a sheet) answers nothing without looking; a ledger
        less than ~3x the request is cheaper to read whole, filtered by a set as it streams (~3.5 µs a ledger
        row against ~12 µs a key through the temp table: 0.5 s instead of 1.3 s for the 100k rows a run just
        paid); otherwise the keys go to an
        unindexed temp table in ONE transaction (autocommit made every insert its own commit: ~10 s for 1M
        keys) and each is looked up in the primary-key index.
        """
        cols = ["row_key", "status", "attempt", "operation_id", "bonus_id", "paid_run_id", "errors", "retryable",
                "batch_id", "user_id", "amount_cents", "lookalike", "paid_at"]
        select = f"SELECT {', '.join('r.' + c for c in cols)} FROM "
        with self._mutex:
            top = self.db.execute("SELECT MAX(rowid) FROM rows").fetchone()[0]
            wanted = list(dict.fromkeys(row_keys)) if top is not None else []
            if not wanted:
                got: list[Any] = []
            elif top <= 3 * len(wanted):
                keep = set(wanted)
                got = [r for r in self.db.execute(select + "rows r") if r[0] in keep]
            else:
                self.db.execute("CREATE TEMP TABLE IF NOT EXISTS wanted_keys(k TEXT)")
                own_tx = not self.db.in_transaction
                if own_tx:
                    self.db.execute("BEGIN")
                try:
                    self.db.execute("DELETE FROM wanted_keys")
                    self.db.executemany("INSERT INTO wanted_keys VALUES (?)", ((k,) for k in wanted))
                    got = self.db.execute(
                        select + "wanted_keys w CROSS JOIN rows r ON r.row_key = w.k").fetchall()
                    self.db.execute("DELETE FROM wanted_keys")
                finally:
                    if own_tx:
                        self.db.execute("COMMIT")
        return pd.DataFrame(got, columns=cols)

    def claim_recovered(self, batch_id: str, row_keys: Sequence[str]) -> None:
        """Recovered rows (batch unknown) that a sheet of `batch_id` holds belong to that batch from now on."""
        if row_keys:
            self._tx([("UPDATE rows SET batch_id=? WHERE row_key=? AND batch_id=''",
                       [(batch_id, k) for k in row_keys], True)])

    def batch_has_bonus_keys(self, batch_id: str) -> bool:
        """Whether some row of the batch was keyed by a bonus_key (its row key is not its content key)."""
        return bool(self._query("SELECT 1 FROM rows WHERE batch_id=? AND content_key IS NOT NULL"
                                " AND content_key != row_key LIMIT 1", (batch_id,)))

    def rows_by_content(self, content_keys: Sequence[str]) -> pd.DataFrame:
        """Rows that may hold money whose content key (or content-derived row key) is one of these."""
        cols = ["row_key", "content_key", "status", "bonus_id", "paid_run_id", "operation_id"]
        got = self._query_in(content_keys, 450, lambda marks: (
            f"SELECT {', '.join(cols)} FROM rows WHERE status IN ({_MAY_BE_PAID_SQL}) AND"
            f" ((content_key IN ({marks}) AND content_key != row_key) OR row_key IN ({marks}))"), twice=True)
        return pd.DataFrame(got, columns=cols)

    def _query_in(self, keys: Sequence[str], size: int, sql: Callable[[str], str], *, twice: bool = False,
                  after: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """`sql(marks)` over the distinct `keys` in slices of `size` (SQLite caps the parameters of a statement);
        `twice`: the marks appear twice in the statement; `after`: parameters that follow the keys."""
        wanted = list(dict.fromkeys(keys))
        got: list[tuple[Any, ...]] = []
        for i in range(0, len(wanted), size):
            part = wanted[i:i + size]
            got += self._query(sql(",".join("?" * len(part))), [*part, *(part if twice else ()), *after])
        return got

    def supersede_missing(self, batch_id: str, present: set[str], run_id: str) -> int:
        """Failed rows of the batch that its latest sheet no longer holds (corrected or deleted) are never sent
        again, by `run` or by `retry`. Returns how many were superseded."""
        failed = [k for (k,) in self._query("SELECT row_key FROM rows WHERE batch_id=? AND status='failed'",
                                            (batch_id,)) if k not in present]
        if failed:
            self._tx([("UPDATE rows SET status='superseded', run_id=?, updated=? WHERE row_key=? AND status='failed'",
                       [(run_id, utcnow(), k) for k in failed], True)])
        return len(failed)

    def other_batches_since(self, batch_id: str, since: str) -> bool:
        """Whether any row of another batch may hold money paid (or planned) since `since`."""
        return bool(self._query(f"SELECT 1 FROM rows WHERE batch_id != ? AND status IN ({_MAY_BE_PAID_SQL})"
                                " AND COALESCE(paid_at, updated) >= ? LIMIT 1", (batch_id, since)))

    def recent_lookalikes(self, lookalikes: Sequence[str], batch_id: str, since: str) -> pd.DataFrame:
        """Rows of OTHER batches that may hold money, with one of these look-alike keys, paid (or planned)
        since `since`: the look-alike guard's evidence."""
        cols = ["lookalike", "batch_id", "paid_run_id", "run_id", "bonus_id", "status", "paid_at", "updated"]
        got = self._query_in(lookalikes, 900, lambda marks: (
            f"SELECT {', '.join(cols)} FROM rows WHERE lookalike IN ({marks}) AND batch_id != ?"
            f" AND status IN ({_MAY_BE_PAID_SQL}) AND COALESCE(paid_at, updated) >= ?"), after=(batch_id, since))
        return pd.DataFrame(got, columns=cols)

    def record_intent(self, run_id: str, batch_id: str, planned: pd.DataFrame, items: Sequence[bytes]) -> int:
        """Commit planned rows and their operations BEFORE anything is sent; returns how many rows were written
        (fewer than planned when a row the ledger holds in another state than failed/superseded was left alone).

        `planned` has row_key, source_file, source_row, user_id, amount_cents, chunk_no, operation_id,
        attempt; `items` holds each row's JSON object, in the same order.
        """
        if planned.empty:
            return 0
        now = utcnow()
        n = len(planned)
        op_ids, attempts = planned["operation_id"].tolist(), planned["attempt"].astype(int).tolist()
        row_params = zip(  # whole columns as lists: iterating Arrow-backed columns costs ~7 µs a value
            planned["row_key"].tolist(), [batch_id] * n, [run_id] * n,
            planned["source_file"].tolist(), planned["source_row"].astype(int).tolist(), planned["user_id"].tolist(),
            planned["amount_cents"].astype(int).tolist(), items, ["planned"] * n,
            attempts, op_ids, [now] * n, _column(planned, "content_key"), _column(planned, "lookalike"),
        )
        first: dict[str, int] = {}  # each operation's first row (a groupby + iterrows cost ~12 ms a chunk)
        for i, op_id in enumerate(op_ids):
            first.setdefault(op_id, i)
        counts, chunk_nos = Counter(op_ids), planned["chunk_no"].astype(int).tolist()
        op_params = [(op_id, batch_id, run_id, chunk_nos[i], attempts[i], counts[op_id], "planned", now)
                     for op_id, i in first.items()]
        return self._tx([
            ("INSERT INTO rows(row_key, batch_id, run_id, source_file, source_row, user_id, amount_cents, item,"
             " status, attempt, operation_id, updated, content_key, lookalike) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
             " ON CONFLICT(row_key) DO UPDATE SET run_id=excluded.run_id, source_file=excluded.source_file,"
             " source_row=excluded.source_row, user_id=excluded.user_id, amount_cents=excluded.amount_cents,"
             " item=excluded.item, status='planned', attempt=excluded.attempt,"
             " operation_id=excluded.operation_id, errors=NULL, retryable=0, updated=excluded.updated,"
             " content_key=excluded.content_key, lookalike=excluded.lookalike"
             " WHERE rows.status IN ('failed', 'superseded')", row_params, True),
            ("INSERT OR IGNORE INTO operations(operation_id, batch_id, run_id, chunk_no, attempt, item_count,"
             " state, updated) VALUES (?,?,?,?,?,?,?,?)", op_params, True),
            ("UPDATE runs SET planned = COALESCE(planned, 0) + ? WHERE run_id=?", (len(planned), run_id), False),
        ])

    def rows_of_operation(self, operation_id: str, status: RowState | None = None) -> list[tuple[str, bytes]]:
        """(row_key, item JSON) of the rows this operation carries (in one state, if given), in a stable order."""
        where = " AND status=?" if status else ""
        return self._query(f"SELECT row_key, item FROM rows WHERE operation_id=?{where} ORDER BY source_file,"
                           " source_row, row_key", (operation_id, status) if status else (operation_id,))

    def operations_with_unknown_rows(self) -> list[str]:
        """Finished operations some of whose rows have an unknown outcome: the next run asks the server again."""
        return [r[0] for r in self._query("SELECT DISTINCT operation_id FROM rows WHERE status='unknown'"
                                          " AND operation_id IS NOT NULL ORDER BY operation_id")]

    def rows_frame(self, *, batch_id: str | None = None, statuses: Sequence[str] | None = None,
                   run_id: str | None = None) -> pd.DataFrame:
        cols = ["row_key", "batch_id", "run_id", "source_file", "source_row", "user_id", "amount_cents", "status",
                "attempt", "operation_id", "bonus_id", "errors", "retryable", "paid_run_id", "item", "content_key",
                "lookalike"]
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("batch_id", batch_id), ("run_id", run_id)):
            if value:
                where.append(f"{column}=?")
                params.append(value)
        if statuses:
            where.append(f"status IN ({','.join('?' * len(statuses))})")
            params.extend(statuses)
        sql = f"SELECT {', '.join(cols)} FROM rows" + (" WHERE " + " AND ".join(where) if where else "")
        return pd.DataFrame(self._query(sql + " ORDER BY source_file, source_row", params), columns=cols)

    def known_operation_ids(self) -> set[str]:
        return {r[0] for r in self._query("SELECT operation_id FROM operations")}

    def record_recovered(self, op: dict[str, Any], rows: Sequence[tuple[Any, ...]]) -> None:
        """What the server's log of an operation the ledger did not know says, in one transaction.

        `rows`: (row_key, user_id, amount_cents, item, status, bonus_id, errors JSON, lookalike, paid_at).
        The server is the truth: a row it paid becomes `paid` even where the ledger said failed; nothing the
        ledger already knows as paid, planned or unknown is overwritten. The batch is not known ('').
        """
        now = utcnow()
        self._tx([
            ("INSERT INTO rows(row_key, batch_id, run_id, user_id, amount_cents, item, status, attempt, operation_id,"
             " bonus_id, errors, paid_run_id, updated, lookalike, paid_at) VALUES (?,'','recovered',?,?,?,?,1,?,?,?,"
             "'recovered',?,?,?) ON CONFLICT(row_key) DO UPDATE SET status=excluded.status,"
             " bonus_id=excluded.bonus_id, operation_id=excluded.operation_id, paid_at=excluded.paid_at,"
             " paid_run_id='recovered', updated=excluded.updated"
             " WHERE rows.status IN ('failed', 'superseded') AND excluded.status IN ('paid', 'unknown')",
             [(key, user, cents, item, status, op["id"], bonus, errors, now, lookalike, paid_at)
              for key, user, cents, item, status, bonus, errors, lookalike, paid_at in rows], True),
            ("INSERT OR IGNORE INTO operations(operation_id, batch_id, run_id, attempt, item_count, state, status,"
             " submitted, started, finished, progress, details, updated) VALUES (?,'','recovered',1,?,'done',?,?,?,?,"
             "?,?,?)", (op["id"], len(rows), *_op_fields(op), now), False),
        ])

    # -- operations ---------------------------------------------------------------------------

    def open_operations(self, batch_id: str | None = None) -> list[Operation]:
        """Operations whose outcome is not yet recorded: resumed before any new work starts."""
        sql = ("SELECT operation_id, batch_id, run_id, chunk_no, attempt, item_count, state FROM operations"
               " WHERE state IN ('planned', 'submitted')")
        rows = self._query(sql + (" AND batch_id=?" if batch_id else "") + " ORDER BY run_id, chunk_no",
                           (batch_id,) if batch_id else ())
        return [Operation(*r) for r in rows]

    def mark_submitted(self, operation_id: str, op: dict[str, Any]) -> None:
        """The server holds the operation. Its rows stay `planned` (one state per row less to write):
        a row is in flight exactly while its operation is open."""
        self._tx([
            ("UPDATE operations SET state='submitted', status=?, submitted=?, started=?, finished=?, progress=?,"
             " details=?, updated=? WHERE operation_id=? AND state IN ('planned','submitted')",
             (*_op_fields(op), utcnow(), operation_id), False),
        ])

    def record_outcome(self, operation_id: str, op: dict[str, Any] | None, results: Sequence[RowResult],
                       run_id: str) -> None:
        """Write the operation's final status and every row's result in one transaction."""
        now = utcnow()
        state = "done" if op is not None else "rejected"
        op_fields = _op_fields(op) if op is not None else (None,) * 6
        self._tx([
            ("UPDATE operations SET state=?, status=COALESCE(?, status), submitted=COALESCE(?, submitted),"
             " started=COALESCE(?, started), finished=COALESCE(?, finished), progress=COALESCE(?, progress),"
             " details=COALESCE(?, details), updated=? WHERE operation_id=?",
             (state, *op_fields, now, operation_id), False),
            ("UPDATE rows SET status=?, bonus_id=?, errors=?, retryable=?, paid_run_id=?, paid_at=?, updated=?"
             " WHERE row_key=? AND operation_id=? AND status='planned'",
             [(r.status, r.bonus_id, orjson.dumps(r.errors).decode() if r.errors else None, int(r.retryable),
               run_id if r.status == "paid" else None, now if r.status == "paid" else None, now, r.row_key,
               operation_id) for r in results], True),
        ])

    def settle_unknown(self, operation_id: str, op: dict[str, Any], results: Sequence[RowResult], run_id: str
                       ) -> int:
        """Rows of unknown outcome that a new, definitive reading of the operation (`op`) and its log settles."""
        now = utcnow()
        done = [r for r in results if r.status != "unknown"]
        if done:
            self._tx([("UPDATE operations SET status=?, submitted=?, started=?, finished=?, progress=?, details=?,"
                       " updated=? WHERE operation_id=?", (*_op_fields(op), now, operation_id), False),
                      ("UPDATE rows SET status=?, bonus_id=?, errors=?, retryable=?, paid_run_id=?, paid_at=?,"
                       " updated=? WHERE row_key=? AND operation_id=? AND status='unknown'",
                       [(r.status, r.bonus_id, orjson.dumps(r.errors).decode() if r.errors else None,
                         int(r.retryable), run_id if r.status == "paid" else None,
                         now if r.status == "paid" else None, now, r.row_key, operation_id) for r in done], True)])
        return len(done)

    def operations_frame(self, *, run_id: str | None = None, operation_ids: Sequence[str] | None = None
                         ) -> pd.DataFrame:
        cols = ["operation_id", "batch_id", "run_id", "chunk_no", "attempt", "item_count", "state", "status",
                "submitted", "started", "finished", "progress", "details"]
        sql = f"SELECT {', '.join(cols)} FROM operations"
        params: list[Any] = []
        if operation_ids is not None:
            if not operation_ids:
                operation_ids = [""]
            sql += f" WHERE operation_id IN ({','.join('?' * len(operation_ids))})"
            params = list(operation_ids)
        elif run_id:
            sql += " WHERE run_id=?"
            params = [run_id]
        frame = pd.DataFrame(self._query(sql + " ORDER BY run_id, chunk_no", params), columns=cols)
        details = [orjson.loads(d) if isinstance(d, str) else {} for d in frame.pop("details")]
        for name in DETAIL_COUNTS:
            frame[name] = pd.array([d.get(name) for d in details], dtype="Int64")
        return frame

    # -- status (read-only, portable SQL): `payout status` -----------------------------------------------------

    def recent_runs(self, limit: int = 10, run_id: str | None = None) -> list[dict[str, Any]]:
        """The last `limit` runs, newest first (or the one `run_id`), with their recorded meta decoded."""
        cols = ("run_id", "batch_id", "kind", "started", "finished", "outcome", "meta", "sheet_rows", "to_plan",
                "planned")
        sql = f"SELECT {', '.join(cols)} FROM runs"
        rows = (self._query(sql + " WHERE run_id=?", (run_id,)) if run_id is not None
                else self._query(sql + " ORDER BY run_id DESC LIMIT ?", (limit,)))
        out = [dict(zip(cols, r)) for r in rows]
        for run in out:
            run["meta"] = orjson.loads(run["meta"]) if run["meta"] else {}
        return out

    def run_row_states(self, run_id: str) -> dict[str, dict[str, int]]:
        """Rows whose last planning run is `run_id`, per ledger status: {status: {rows, cents, retryable}}."""
        sql = ("SELECT status, COUNT(*), COALESCE(SUM(amount_cents), 0), COALESCE(SUM(retryable), 0) FROM rows"
               " WHERE run_id=? GROUP BY status")
        return {status: {"rows": n, "cents": cents, "retryable": retryable}
                for status, n, cents, retryable in self._query(sql, (run_id,))}

    def run_operation_states(self, run_id: str) -> dict[str, int]:
        """Operations `run_id` created or last touched, per ledger state (planned | submitted | done | rejected)."""
        return dict(self._query("SELECT state, COUNT(*) FROM operations WHERE run_id=? GROUP BY state", (run_id,)))


    # -- a shared ledger (PostgreSQL): one planner at a time, operations claimed for a lease ----------------

    def hold_planning_lock(self) -> None:
        """PostgreSQL: recover, match and plan one worker at a time (until `release_planning_lock` or close), so
        the first planner writes the whole plan and the next one finds it committed (its rows already planned).
        SQLite: nothing (the file lock already admits one run)."""
        if self.url is None or self._planning:
            return
        self._query("SELECT pg_advisory_lock(?)", (PLANNING_LOCK,))
        self._planning = True

    def release_planning_lock(self) -> None:
        if self._planning:
            self._query("SELECT pg_advisory_unlock(?)", (PLANNING_LOCK,))
            self._planning = False

    def claim_operation(self, worker: str, lease_s: float) -> Operation | None:
        """Claim the first open operation nobody holds (or whose holder's lease ran out) for `lease_s` seconds of
        the server's clock. SKIP LOCKED: workers claiming at the same moment never wait for, nor get, the same
        one. The claimant of a dead worker's operation asks the server by its id before any POST (execute.py)."""
        rows = self._query(
            "UPDATE operations SET claimed_by=?, claim_until=clock_timestamp() + make_interval(secs => ?)"
            " WHERE operation_id = (SELECT operation_id FROM operations WHERE state IN ('planned', 'submitted')"
            " AND (claim_until IS NULL OR claim_until < clock_timestamp()) ORDER BY run_id, chunk_no"
            " LIMIT 1 FOR UPDATE SKIP LOCKED)"
            " RETURNING operation_id, batch_id, run_id, chunk_no, attempt, item_count, state", (worker, lease_s))
        return Operation(*rows[0]) if rows else None

    def renew_claims(self, worker: str, lease_s: float) -> None:
        self._query("UPDATE operations SET claim_until=clock_timestamp() + make_interval(secs => ?) WHERE claimed_by=?"
                    " AND state IN ('planned', 'submitted') RETURNING 1", (lease_s, worker))

    def release_claims(self, worker: str) -> None:
        """A worker that stops leaves its open operations to the others at once (not after the lease)."""
        self._query("UPDATE operations SET claimed_by=NULL, claim_until=NULL WHERE claimed_by=?"
                    " AND state IN ('planned', 'submitted') RETURNING 1", (worker,))

    def claims(self, worker: str, lease_s: float, *, busy_limit: int, stopping: Callable[[], bool],
               poll_s: float = 0.2) -> Iterator[Operation]:
        """Operations for this worker, one claim at a time, while it drives fewer than `busy_limit` (a claim
        waiting in a queue is work another worker could do). Ends when nothing is open any more, so every worker
        stays until the batch is done and takes over what a dead worker's expired claim leaves."""
        while not stopping():
            mine, others = self._query(
                "SELECT COALESCE(SUM(CASE WHEN claimed_by=? THEN 1 ELSE 0 END), 0), COALESCE(SUM(CASE WHEN claimed_by"
                " IS DISTINCT FROM ? THEN 1 ELSE 0 END), 0) FROM operations WHERE state IN ('planned', 'submitted')",
                (worker, worker))[0]
            if mine < busy_limit:
                op = self.claim_operation(worker, lease_s)
                if op is not None:
                    yield op
                    continue
                if not others:
                    return
            time.sleep(poll_s)

    def keeping_claims(self, worker: str, lease_s: float) -> _ClaimKeeper:
        """While inside: renew this worker's claims every lease/3 seconds; on leaving, release the open ones."""
        return _ClaimKeeper(self, worker, lease_s)


class _ClaimKeeper:
    def __init__(self, ledger: Ledger, worker: str, lease_s: float) -> None:
        self.ledger, self.worker, self.lease_s = ledger, worker, lease_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="claims", daemon=True)

    def _beat(self) -> None:
        while not self._done.wait(self.lease_s / 3):
            try:
                self.ledger.renew_claims(self.worker, self.lease_s)
            except Exception:  # the ledger is gone: the claims expire and others resume the operations (safe)
                return

    def __enter__(self) -> None:
        if self.ledger.shared:
            self._thread.start()

    def __exit__(self, *exc: object) -> None:
        if self.ledger.shared:
            self._done.set()
            self._thread.join()
            self.ledger.release_claims(self.worker)


def _column(frame: pd.DataFrame, name: str) -> list[Any]:
    return frame[name].tolist() if name in frame.columns else [None] * len(frame)


def _op_fields(op: dict[str, Any]) -> tuple[Any, ...]:
    return (op.get("status"), op.get("submitted"), op.get("started"), op.get("finished"), op.get("progress"),
            orjson.dumps(op.get("details") or {}).decode())
