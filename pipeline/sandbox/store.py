"""SQLite state of the sandbox: bonuses, operations and the failed items of each operation."""
from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

FIRST_BONUS_ID = 100_000_000_001  # 12 digits: ids order the same as strings and as numbers

SCHEMA = """
CREATE TABLE IF NOT EXISTS bonuses (
    id INTEGER PRIMARY KEY,
    user_id TEXT NOT NULL,
    amount TEXT NOT NULL,
    private_comment TEXT,
    public_title TEXT,
    public_message TEXT,
    without_message INTEGER NOT NULL,
    assignment_id TEXT,
    created_us INTEGER NOT NULL,
    operation_id TEXT,
    item_idx INTEGER
);
CREATE INDEX IF NOT EXISTS bonuses_user_id ON bonuses(user_id);
CREATE INDEX IF NOT EXISTS bonuses_operation ON bonuses(operation_id, item_idx);
CREATE TABLE IF NOT EXISTS operations (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    async_mode INTEGER NOT NULL,
    status TEXT NOT NULL,
    skip_invalid_items INTEGER NOT NULL,
    submitted_us INTEGER NOT NULL,
    started_us INTEGER,
    finished_us INTEGER,
    total_count INTEGER NOT NULL,
    valid_count INTEGER NOT NULL DEFAULT 0,
    not_valid_count INTEGER NOT NULL DEFAULT 0,
    success_count INTEGER NOT NULL DEFAULT 0,
    failed_count INTEGER NOT NULL DEFAULT 0,
    items BLOB NOT NULL
);
DROP INDEX IF EXISTS operations_status;  -- was (status, seq); (status, id) also serves listing by status
CREATE INDEX IF NOT EXISTS operations_status_id ON operations(status, id);
CREATE INDEX IF NOT EXISTS operations_submitted ON operations(submitted_us, id);
CREATE INDEX IF NOT EXISTS operations_finished ON operations(finished_us, id);
CREATE TABLE IF NOT EXISTS operation_failures (
    operation_id TEXT NOT NULL,
    item_idx INTEGER NOT NULL,
    type TEXT NOT NULL,
    output BLOB NOT NULL,
    PRIMARY KEY (operation_id, item_idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS quota (
    day TEXT PRIMARY KEY,
    used INTEGER NOT NULL
) WITHOUT ROWID;
"""

BONUS_COLUMNS = "id, user_id, amount, private_comment, public_title, public_message, without_message, assignment_id, created_us"
OPERATION_COLUMNS = (
    "id, status, skip_invalid_items, submitted_us, started_us, finished_us, total_count, valid_count, "
    "not_valid_count, success_count, failed_count"
)


def now_us() -> int:
    """Wall-clock UTC time in integer microseconds, truncated to the milliseconds Toloka shows."""
    return time.time_ns() // 1_000_000 * 1000


def render_time(us: int | None) -> str | None:
    """Toloka's timestamp text: UTC, milliseconds, no zone suffix."""
    return None if us is None else _utc_text(us)


def _utc_text(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]


class OperationExists(Exception):
    """An operation with this id was already submitted."""


class Store:
    """One SQLite connection, used from the server's event-loop thread only."""

    def __init__(self, path: str | Path) -> None:
        self.conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a process crash (only power loss can drop the last commits).
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA cache_size=-65536")  # 64 MiB: the bonuses' random user_id index stays cached
        self.conn.executescript(SCHEMA)
        top = self.conn.execute("SELECT max(id) FROM bonuses").fetchone()[0]
        self._next_bonus_id = max(FIRST_BONUS_ID, (top or 0) + 1)
        top_seq = self.conn.execute("SELECT max(seq) FROM operations").fetchone()[0]
        self._next_seq = (top_seq or 0) + 1
        self._time_cache: dict[int, str] = {}

    def close(self) -> None:
        self.conn.close()

    def created_text(self, us: int) -> str:
        text = self._time_cache.get(us)
        if text is None:
            if len(self._time_cache) > 4096:
                self._time_cache.clear()
            text = self._time_cache[us] = _utc_text(us)
        return text

    def _bonus_rows(self, items: Iterable[tuple[int, dict[str, Any]]], created: int, op_id: str | None) -> list[tuple]:
        rows = []
        bonus_id = self._next_bonus_id
        dumps = orjson.dumps
        for idx, item in items:
            title = item.get("public_title")
            message = item.get("public_message")
            rows.append((
                bonus_id, item["user_id"], repr(item["amount"]), item.get("private_comment"),
                None if title is None else dumps(title).decode(),
                None if message is None else dumps(message).decode(),
                bool(item.get("without_message", False)), item.get("assignment_id"), created, op_id, idx,
            ))
            bonus_id += 1
        return rows

    def _insert_bonuses(self, rows: list[tuple]) -> None:
        self.conn.executemany(
            f"INSERT INTO bonuses ({BONUS_COLUMNS}, operation_id, item_idx) VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows
        )
        if rows:
            self._next_bonus_id = rows[-1][0] + 1

    def create_bonuses_sync(
        self, valid: list[tuple[int, dict[str, Any]]], failures: list[tuple[int, bytes]],
        op_id: str | None, skip_invalid: bool, items_blob: bytes, total: int,
    ) -> list[tuple]:
        """Create bonuses of a sync request (and its finished operation when it has an id) in one transaction."""
        created = now_us()
        rows = self._bonus_rows(valid, created, op_id)
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            if op_id is not None:
                self._insert_operation(op_id, False, "SUCCESS", skip_invalid, created, total, items_blob)
                self.conn.execute(
                    "UPDATE operations SET started_us=?, finished_us=?, valid_count=?, not_valid_count=?, "
                    "success_count=?, failed_count=? WHERE id=?",
                    (created, created, len(valid), len(failures), len(valid), len(failures), op_id),
                )
                self.conn.executemany(
                    "INSERT INTO operation_failures VALUES (?,?,'USER_BONUS_VALIDATE',?)",
                    [(op_id, idx, out) for idx, out in failures],
                )
            self._insert_bonuses(rows)
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        return rows

    def _insert_operation(
        self, op_id: str, async_mode: bool, status: str, skip_invalid: bool, submitted: int, total: int, items: bytes
    ) -> None:
        try:
            self.conn.execute(
                "INSERT INTO operations (id, seq, async_mode, status, skip_invalid_items, submitted_us, total_count, items)"
                " VALUES (?,?,?,?,?,?,?,?)",
                (op_id, self._next_seq, async_mode, status, skip_invalid, submitted, total, items),
            )
        except sqlite3.IntegrityError as exc:
            raise OperationExists(op_id) from exc
        self._next_seq += 1

    def submit_operation(self, op_id: str, skip_invalid: bool, total: int, items: bytes) -> None:
        """Persist a PENDING async operation; raise OperationExists for a repeated id."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self._insert_operation(op_id, True, "PENDING", skip_invalid, now_us(), total, items)
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def operation_exists(self, op_id: str) -> bool:
        return self.conn.execute("SELECT 1 FROM operations WHERE id=?", (op_id,)).fetchone() is not None

    def mark_running(self, op_id: str) -> None:
        self.conn.execute(
            "UPDATE operations SET status='RUNNING', started_us=coalesce(started_us, ?) WHERE id=? AND status='PENDING'",
            (now_us(), op_id),
        )

    def unfinished_operations(self) -> list[str]:
        rows = self.conn.execute("SELECT id FROM operations WHERE status IN ('PENDING','RUNNING') ORDER BY seq")
        return [row[0] for row in rows]

    def operation_items(self, op_id: str) -> tuple[str, bool, bytes] | None:
        row = self.conn.execute("SELECT status, skip_invalid_items, items FROM operations WHERE id=?", (op_id,)).fetchone()
        return None if row is None else (row[0], bool(row[1]), row[2])

    def finish_operation(
        self, op_id: str, valid: list[tuple[int, dict[str, Any]]], failures: list[tuple[int, str, bytes]],
        not_valid: int, paid: bool,
    ) -> int:
        """Pay `valid` (when `paid`), record failures and finish the operation in ONE transaction; return bonuses paid."""
        finished = now_us()
        rows = self._bonus_rows(valid, finished, op_id) if paid else []
        total = len(valid) + not_valid
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            status = self.conn.execute("SELECT status FROM operations WHERE id=?", (op_id,)).fetchone()
            if status is None or status[0] not in ("PENDING", "RUNNING"):
                self.conn.execute("ROLLBACK")
                return 0
            self._insert_bonuses(rows)
            self.conn.executemany(
                "INSERT INTO operation_failures VALUES (?,?,?,?)", [(op_id, idx, kind, out) for idx, kind, out in failures]
            )
            self.conn.execute(
                "UPDATE operations SET status=?, started_us=coalesce(started_us, ?), finished_us=?, valid_count=?, "
                "not_valid_count=?, success_count=?, failed_count=? WHERE id=?",
                ("SUCCESS" if paid else "FAIL", finished, finished, len(valid), not_valid, len(rows), total - len(rows), op_id),
            )
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        return len(rows)

    def get_operation(self, op_id: str) -> tuple | None:
        return self.conn.execute(f"SELECT {OPERATION_COLUMNS} FROM operations WHERE id=?", (op_id,)).fetchone()

    def find_operations(self, where: list[str], args: list[Any], order: str, limit: int) -> list[tuple]:
        return self._find(OPERATION_COLUMNS, "operations", where, args, order, limit)

    def operation_log(self, op_id: str) -> tuple[bytes, dict[int, int], dict[int, tuple[str, bytes]]]:
        """The items blob, bonus id by item index, and failure (type, output) by item index."""
        items = self.conn.execute("SELECT items FROM operations WHERE id=?", (op_id,)).fetchone()[0]
        paid = dict(self.conn.execute("SELECT item_idx, id FROM bonuses WHERE operation_id=?", (op_id,)).fetchall())
        failed = {
            idx: (kind, out)
            for idx, kind, out in self.conn.execute(
                "SELECT item_idx, type, output FROM operation_failures WHERE operation_id=?", (op_id,)
            )
        }
        return items, paid, failed

    def get_bonus(self, bonus_id: int) -> tuple | None:
        return self.conn.execute(f"SELECT {BONUS_COLUMNS} FROM bonuses WHERE id=?", (bonus_id,)).fetchone()

    def find_bonuses(self, where: list[str], args: list[Any], order: str, limit: int) -> list[tuple]:
        return self._find(BONUS_COLUMNS, "bonuses", where, args, order, limit)

    def _find(self, columns: str, table: str, where: list[str], args: list[Any], order: str, limit: int) -> list[tuple]:
        sql = f"SELECT {columns} FROM {table}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return self.conn.execute(f"{sql} ORDER BY {order} LIMIT ?", (*args, limit)).fetchall()

    def quota_used(self, day: str) -> int:
        """POSTs counted against the daily quota on `day` (ISO date, UTC)."""
        row = self.conn.execute("SELECT used FROM quota WHERE day=?", (day,)).fetchone()
        return 0 if row is None else row[0]

    def save_quota(self, day: str, used: int) -> None:
        """One autocommit row write (WAL, synchronous=NORMAL: no fsync), so the count survives a restart."""
        self.conn.execute("INSERT OR REPLACE INTO quota (day, used) VALUES (?, ?)", (day, used))

    def counts(self) -> tuple[int, dict[str, int]]:
        bonuses = self.conn.execute("SELECT count(*) FROM bonuses").fetchone()[0]
        ops = dict(self.conn.execute("SELECT status, count(*) FROM operations GROUP BY status").fetchall())
        return bonuses, ops
