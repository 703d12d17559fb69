"""The contract the stages share, so that no stage imports another: column names, the text codes and 409
conflict key every stage reads, the vocabulary of states and statuses, and run ids.

Floors (tests/test_layers.py checks them): this module, `errors`, `money` and `wire` at the bottom; the edges
(`config`, `ledger`, `toloka`, `target`, `logs`, `progress`, `signals`) above; the stages (`ingest`, `validate`,
`keys`, `totals`, `dedupe`, `plan`, `guard`, `execute`, `report`, and their parts such as `ingest_csv`) import
only those two floors; the composers (`run`, `recover`, `cli`) compose them. Nothing but `cli` (lazily) imports the sandbox.
"""

from __future__ import annotations

import ctypes
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, get_args

import numpy as np
import pandas as pd
import pyarrow as pa

REQUIRED_COLUMNS = ("user_id", "amount")
OPTIONAL_COLUMNS = (
    "assignment_id",
    "private_comment",
    "public_title",
    "public_message",
    "without_message",
    "bonus_key",
)
TEXT_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
# A sheet's columns payout does not read travel to the report as `sheet:<header as written>` (text).
CARRIED_PREFIX = "sheet:"


@dataclass(frozen=True)
class SheetLimits:
    """What a sheet may hold, checked before its bulk is read (each one a flag of `payout run`)."""

    max_file_mb: float = 1024.0
    max_rows: int = 2_000_000
    max_columns: int = 200
    max_cell_chars: int = 32_767  # Excel's own limit for one cell
    max_xlsx_cells: int = 50_000_000  # rows x columns of an .xlsx sheet's used range
    max_xlsx_unzipped_mb: float = 2048.0


@dataclass(frozen=True)
class SheetOptions:
    """How to read a sheet when finance's file does not say it itself (all None: detect, and refuse if unsure)."""

    encoding: str | None = None  # CSV: e.g. cp1251; None: detected
    delimiter: str | None = None  # CSV: , ; tab | ; None: sniffed from the header line
    sheet: str | None = None  # .xlsx: the sheet to read; None: the only non-empty one
    header_row: int | None = None  # 1-based row of the header as the spreadsheet shows it; None: found
    mapping: Mapping[str, str] = field(default_factory=dict)  # sheet header -> canonical column (configs)
    # every configured mapping by name: only to name the one that fits when required columns are missing
    known_mappings: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    limits: SheetLimits = field(default_factory=SheetLimits)


class SheetColumns:
    """A sheet as read, before it becomes the canonical frame: its string columns, each handed out once (`take`)
    so that it is freed once converted, or read only then (Parquet): the Arrow copy of a whole 1M-row sheet
    (~400 MB) is never alive beside its Python strings.

    `rows` are the data rows' numbers as a spreadsheet shows them (None: the header is row 1, the data rows
    2, 3, ...); `notices` are what a person should know about how the sheet was read (detected encoding, the
    header row found, hidden rows): logged, and listed in the summary.
    """

    def __init__(self, names: list[str], num_rows: int, sizes: list[int],
                 read: Callable[[int], pa.ChunkedArray], rows: np.ndarray | None = None,
                 notices: list[str] | None = None) -> None:
        self.names, self.num_rows, self.sizes, self._read = names, num_rows, sizes, read
        self.rows, self.notices = rows, list(notices or ())

    @classmethod
    def of_table(cls, table: pa.Table, rows: np.ndarray | None = None,
                 notices: list[str] | None = None) -> SheetColumns:
        cols: list[pa.ChunkedArray | None] = list(table.columns)

        def read(i: int) -> pa.ChunkedArray:
            col, cols[i] = cols[i], None
            assert col is not None, "a column is taken once"
            return col

        return cls([str(n) for n in table.column_names], table.num_rows, [c.nbytes for c in table.columns], read,
                   rows, notices)

    def take(self, i: int) -> pa.ChunkedArray:
        return self._read(i)


_HEADER_SEPARATORS = re.compile(r"[\s\-]+")


def normalise_header(name: object) -> str:
    """"  User ID " -> "user_id", "Public-Title EN" -> "public_title_en"."""
    return _HEADER_SEPARATORS.sub("_", str(name).strip().lower()).strip("_")


_LANGUAGE_COLUMN = re.compile(r"(public_title|public_message)_[a-z0-9]+")


def is_sheet_column(name: str) -> bool:
    """True for a column payout reads (normalised): one of TEXT_COLUMNS, or a per-language title or message
    column such as `public_title_en`. What a configured mapping may map a sheet's header to."""
    return name in TEXT_COLUMNS or _LANGUAGE_COLUMN.fullmatch(name) is not None


def normalised_mapping(mapping: Mapping[str, str]) -> dict[str, str]:
    """A column mapping (sheet header -> column) with both sides normalised: config's already are, one built in
    code may not be."""
    return {normalise_header(k): normalise_header(v) for k, v in mapping.items()}


def column_of(header: object, mapping: Mapping[str, str]) -> str:
    """The column a sheet's header means: the header normalised, then through the (normalised) mapping. The one
    rule every reader and ingest use, so a header found, sniffed or needed means the same thing everywhere."""
    name = normalise_header(header)
    return mapping.get(name, name)


def names_required(headers: Iterable[object], mapping: Mapping[str, str]) -> bool:
    """Whether these headers hold every required column (through the normalised mapping): a header row."""
    return set(REQUIRED_COLUMNS) <= {column_of(h, mapping) for h in headers}


def counted(n: int, noun: str) -> str:
    """"1 row", "12,000 rows": a count for people."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def column_letters(number: int) -> str:
    """1 -> "A", 26 -> "Z", 27 -> "AA": a column as a spreadsheet names it."""
    out = ""
    while number > 0:
        number, rest = divmod(number - 1, 26)
        out = chr(ord("A") + rest) + out
    return out


def one_line(exc: BaseException) -> str:
    """An exception as one short line for a message."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


# Text columns whose codes validate computes once and the frame carries (column `codes_column(c)`, int32, -1 =
# missing, numbered over the whole sheet): keys and the conflict key read them instead of factorising again.
CARRIED_CODES = ("user_id", "public_title", "public_message")


def codes_column(column: str) -> str:
    return f"{column}__codes"


def text_codes(frame: pd.DataFrame, column: str) -> tuple[np.ndarray, int]:
    """(codes, how many values they number) of a text column, -1 = missing: the codes the frame carries (numbered
    over the sheet it came from, so a subset may not use every code), or factorised now."""
    carried = codes_column(column)
    if carried in frame.columns:
        codes = frame[carried].to_numpy()
        return codes, int(codes.max()) + 1 if len(codes) else 0
    codes, uniques = factorize_text(frame[column].to_numpy(dtype=object))
    return codes, len(uniques)


def text_values(frame: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(codes, uniques) like `factorize_text`, from the carried codes when the frame has them (`uniques[k]` is the
    text of code k; None for a code this frame does not use)."""
    if codes_column(column) not in frame.columns:
        return factorize_text(frame[column].to_numpy(dtype=object))
    codes, n = text_codes(frame, column)
    at = np.flatnonzero(codes >= 0)
    first = np.full(n, -1, dtype=np.int64)
    first[codes[at][::-1]] = at[::-1]  # the first row of each code (later writes win: reversed)
    values = frame[column].to_numpy(dtype=object)
    uniques = values[np.maximum(first, 0)]  # a copy (fancy indexing)
    uniques[first < 0] = None
    return codes, uniques


# The 409 ENTITY_CONFLICT identity: Toloka refuses two bonuses equal in these within one request.
CONFLICT_COLUMNS = ("user_id", "amount_cents", "public_title", "public_message", "private_comment")


def conflict_key(frame: pd.DataFrame) -> pd.Series:
    """Integer id of each row's 409 identity (user, amount, title, message, comment); equal id = conflict.

    Ids number identities in order of first appearance within `frame`, so they are only comparable
    within one call. Uses normalised values (cents, canonical JSON): "1.5" and "1.50" conflict.
    """
    if len(frame) == 0:
        return pd.Series([], dtype=np.int64, index=frame.index)
    combined = np.zeros(len(frame), dtype=np.int64)
    size = 1  # number of distinct values `combined` can take
    for c in CONFLICT_COLUMNS:
        column = frame[c]
        if c == CONFLICT_COLUMNS[-1]:
            # The comment is distinct on almost every row, and costly to factorise. A row alone in its group
            # of (user, amount, title, message) conflicts with no row whatever its comment: only the rows
            # that share a group need comment codes (the others keep code 0, which merges nothing).
            combined, uniques = pd.factorize(combined)
            size = len(uniques)
            shared = np.flatnonzero(np.bincount(combined)[combined] > 1)
            codes = np.zeros(len(frame), dtype=np.int64)
            part, n_values = _codes(column.iloc[shared])
            codes[shared] = part
        elif c in CARRIED_CODES:
            carried, n = text_codes(frame, c)
            codes, n_values = carried.astype(np.int64) + 1, n + 1  # missing (-1) -> 0, as in _codes
        else:
            codes, n_values = _codes(column)
        if size * (n_values + 1) >= 2**62:  # keep the mixed radix number inside int64
            combined, uniques = pd.factorize(combined)
            size = len(uniques)
        combined = combined * (n_values + 1) + codes
        size *= n_values + 1
    combined, _ = pd.factorize(combined)
    return pd.Series(combined.astype(np.int64), index=frame.index, name="conflict_key")


def _codes(s: pd.Series) -> tuple[np.ndarray, int]:
    """Integer code per value (missing = its own value) and how many distinct codes there are."""
    if isinstance(s.dtype, pd.api.extensions.ExtensionDtype) and s.dtype.kind in "iu":  # Int64 cents
        codes, uniques = pd.factorize(s.array)
    else:
        codes, uniques = factorize_text(s.to_numpy(dtype=object))
    # missing (-1) becomes code 0, values 1..n (use_na_sentinel=False would scan for NaN again)
    return codes.astype(np.int64) + 1, len(uniques) + 1



DedupePolicy = Literal["keep-first", "reject-all"]
DEDUPE_POLICIES: tuple[DedupePolicy, ...] = get_args(DedupePolicy)

# A row's state in the ledger; "in flight" is its operation's state (planned -> submitted -> done/rejected).
RowState = Literal["planned", "paid", "failed", "unknown", "superseded"]
OperationState = Literal["planned", "submitted", "done", "rejected"]
# A row may hold money on the server in these states: it is never planned again.
MAY_BE_PAID: tuple[RowState, ...] = ("paid", "planned", "unknown")
# A row's status in the report (README "Row statuses").
ReportStatus = Literal["paid", "failed", "invalid", "duplicate", "already_paid", "held_repeat", "pending",
                       "unknown", "planned", "control_total"]
REPORT_STATUSES: tuple[ReportStatus, ...] = get_args(ReportStatus)
LEDGER_TO_REPORT: dict[RowState, ReportStatus] = {"paid": "paid", "failed": "failed", "planned": "pending",
                                                  "unknown": "unknown"}
NEEDS_ATTENTION: tuple[ReportStatus, ...] = ("failed", "invalid", "duplicate", "pending", "unknown", "held_repeat")


def new_run_id() -> str:
    """Sortable by time, unique enough for two runs in the same second."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ") + "-" + secrets.token_hex(2)


def factorize_text(values: pd.Series | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes, uniques) of an object column of str/None, like `pd.factorize` (None -> code -1).

    Groups by object identity first (an int64 factorize of the cells' pointers), then by value over
    the few distinct objects. Columns from `read_sheets` share one string object per distinct text,
    so this is several times faster than hashing every cell; on other input it is merely correct.
    """
    arr = np.ascontiguousarray(np.asarray(values, dtype=object))
    if len(arr) == 0:
        return np.empty(0, dtype=np.intp), np.empty(0, dtype=object)
    # An object array stores PyObject pointers; read them as integers (arr stays alive meanwhile).
    pointers = np.frombuffer(memoryview((ctypes.c_ssize_t * len(arr)).from_address(arr.ctypes.data)), dtype=np.intp)
    sample = pointers[:20_000]
    if len(np.unique(sample)) > 0.95 * len(sample):  # nothing shared (ids): plain hashing is cheaper
        codes, uniques = pd.factorize(arr)
        return codes, np.asarray(uniques, dtype=object)
    codes_obj, uniq_ptr = pd.factorize(pointers)
    # one representative cell per distinct object, in order of first appearance
    first_pos = np.empty(len(uniq_ptr), dtype=np.int64)
    first_pos[codes_obj[::-1]] = np.arange(len(arr) - 1, -1, -1)
    reps = arr[first_pos]
    value_codes, uniques = pd.factorize(reps)
    return value_codes[codes_obj], np.asarray(uniques, dtype=object)




def _malloc_trim() -> None:
    """glibc's malloc_trim(0), where the C library has it (a no-op elsewhere)."""


try:
    _trim = ctypes.CDLL(None).malloc_trim
    _trim.argtypes, _trim.restype = [ctypes.c_size_t], ctypes.c_int

    def _malloc_trim() -> None:
        _trim(0)
except (OSError, AttributeError):  # not glibc
    pass


def release_memory() -> None:
    """Hand memory freed by a stage back to the OS: Arrow's pool (mimalloc keeps freed pages) and glibc's heap
    (pandas' 8 MB-per-1M-rows column copies land there once glibc raises its mmap threshold, and stay).

    The stages call it at their end, so a 1M-row run's peak RSS is its live data, not the sum of what each
    stage once allocated (~100 MiB per stage otherwise). A few ms each.
    """
    pa.default_memory_pool().release_unused()
    _malloc_trim()
