"""Stable row keys: the identity of a bonus row across re-exports, re-runs and retries.

A key is built from *normalised* values (amount in cents, canonical JSON of title and message), so
re-exporting the same sheet ("1.5" written as "1.50", JSON keys in another order) gives the same keys.
Valid rows identical in every field are told apart only among themselves, by their occurrence index (0 for
the first such valid row, 1 for the second, ...): an edit to, or the deletion of, any other row (an invalid
copy included) never changes a row's key, and neither does the order of the rows. Such repeats are always
409 conflicts, so only occurrence 0 is ever paid. A sheet's own `bonus_key` column, where filled, wins: the
finance team's id is the identity. Invalid rows are never paid; their keys (prefix "invalid") only name them in
the report and can never equal a valid row's key.

`content_key` is the occurrence-0 content key of every row: what the bonus *is*, whatever its `bonus_key`.
It equals `row_key` for a first occurrence without `bonus_key`; the ledger keeps it so adding or dropping a
`bonus_key` column on a paid sheet finds the earlier payment. `lookalike_keys` hashes what Toloka's 409 rule
compares (user, amount, title, message, comment) without the batch: the look-alike guard across batches.

    row key = sha256("<batch>\\x1frow\\x1f<user>\\x1f<cents or raw:amount>\\x1f<assignment>\\x1f<title>
                      \\x1f<message>\\x1f<comment>\\x1f<occurrence>")  hex, first 32 chars
    with bonus_key: sha256("<batch>\\x1fkey\\x1f<bonus_key>") hex, first 32 chars
    invalid row:    as a row key with "invalid" for "row", occurrence counted among invalid rows
    look-alike:     sha256("lookalike\\x1f<user>\\x1f<cents>\\x1f<title>\\x1f<message>\\x1f<comment>") hex, 32 chars
Empty cells count as "". \\x1f (unit separator) cannot be typed into a spreadsheet cell.
"""

from __future__ import annotations

import binascii
import hashlib
from collections.abc import Iterable

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.contract import CARRIED_CODES, factorize_text, release_memory, text_values

KEY_LENGTH = 32
_SEP = "\x1f"
_BSEP = _SEP.encode()
_LOOKALIKE = b"lookalike"
_BSEP_SCALAR = pa.scalar(_BSEP, pa.binary())
_SLICE = 65_536  # rows joined and hashed at a time


def assign_row_keys(checked: pd.DataFrame, batch_id: str) -> pd.DataFrame:
    """`checked` (output of validate_rows) plus `row_key` and `content_key` (32 hex chars each).

    Every row gets a distinct row key except rows sharing a filled `bonus_key` (validation reports the
    repeat). Invalid rows get keys too (from their raw amount text when it is not an exact cents value).
    """
    out = checked.copy(deep=False)  # copy-on-write: adding a column never touches `checked`
    n = len(out)
    if n == 0:
        out["row_key"] = pd.Series([], dtype=object, index=out.index)
        out["content_key"] = pd.Series([], dtype=object, index=out.index)
        return out
    # Each field as Arrow UTF-8 bytes, encoded once per distinct text (sheets repeat users, amounts, titles);
    # the fields of a row are joined in Arrow, a slice at a time, and only the hashing is per row in Python.
    fields = [_field(out, "user_id"), _amount_field(out["amount_cents"], out["amount"]), _field(out, "assignment_id"),
              _field(out, "public_title"), _field(out, "public_message"), _field(out, "private_comment")]
    valid = out["is_valid"].to_numpy(dtype=bool) if "is_valid" in out.columns else np.ones(n, dtype=bool)
    row_prefix = f"{batch_id}{_SEP}row".encode()
    invalid_prefix = f"{batch_id}{_SEP}invalid".encode()
    prefix = _Field(valid.astype(np.int8) ^ 1, pa.array([row_prefix, invalid_prefix], pa.binary()))

    # Hash every row as its first occurrence (its content key); equal digests then mean equal identities
    # (the valid/invalid prefix keeps the two groups apart), so only the rare repeats need hashing again.
    digests = _sha256_rows([prefix, *fields, _Field.constant(b"0", n)])
    content = _hex(digests)
    # 64 bits of each digest identify the row's identity well enough to number repeats (a false
    # match would only give a row occurrence 1 instead of 0: still a distinct, stable key)
    ident, _ = pd.factorize(digests.view(np.uint64).reshape(-1, 4)[:, 0])
    occurrence = pd.Series(ident).groupby(ident, sort=False).cumcount().to_numpy()
    changed = np.flatnonzero(occurrence)
    if len(changed):
        occ = occurrence[changed].astype(str).astype(object)
        digests[changed] = _sha256_rows([f.at(changed) for f in (prefix, *fields)] + [_Field(None, occ)])

    if "bonus_key" in out.columns:
        bonus = out["bonus_key"].to_numpy(dtype=object)
        has = np.flatnonzero(pd.notna(bonus))
        if len(has):
            key_prefix = f"{batch_id}{_SEP}key".encode()
            digests[has] = _sha256_all((key_prefix, str(bonus[i]).encode()) for i in has)
            changed = np.union1d(changed, has)
    keys = content
    if len(changed):  # the row key is the content key but where a repeat or a bonus_key made it differ
        keys = content.copy()
        keys[changed] = _hex(digests[changed])
    out["row_key"] = pd.Series(keys, index=out.index, dtype=object)
    out["content_key"] = pd.Series(content, index=out.index, dtype=object)
    release_memory()  # the Arrow slices, hex buffers and digests: back to the OS, not kept
    return out


def lookalike_keys(rows: pd.DataFrame) -> np.ndarray:
    """Batch-free hash of what Toloka's 409 rule compares, for valid rows (object array of 32-hex str)."""
    n = len(rows)
    if n == 0:
        return np.empty(0, dtype=object)
    fields = [_Field.constant(_LOOKALIKE, n), _field(rows, "user_id"),
              _amount_field(rows["amount_cents"], rows["amount_cents"]), _field(rows, "public_title"),
              _field(rows, "public_message"), _field(rows, "private_comment")]
    return _hex(_sha256_rows(fields))


def lookalike_key_of_item(item: dict) -> str:
    """The look-alike key of a bonus as sent (or echoed in an operation log): same bytes as `lookalike_keys`."""
    from decimal import Decimal

    def text(value: object) -> bytes:
        if value is None:
            return b""
        if isinstance(value, str):
            return value.encode()
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)

    cents = int(Decimal(str(item.get("amount"))) * 100)
    parts = [_LOOKALIKE, text(item.get("user_id")), str(cents).encode(), text(item.get("public_title")),
             text(item.get("public_message")), text(item.get("private_comment"))]
    return hashlib.sha256(_BSEP.join(parts)).hexdigest()[:KEY_LENGTH]


def _hex(digests: np.ndarray) -> np.ndarray:
    """Object array of the hex of each digest's first KEY_LENGTH/2 bytes.

    One C pass, then one str per row (read as an Arrow string array of fixed-width slots: no 1M-row Python
    loop, no 4-byte-per-char U32 copy).
    """
    n = len(digests)
    head = digests.view(np.uint8).reshape(-1, 32)[:, : KEY_LENGTH // 2]
    offsets = np.arange(0, (n + 1) * KEY_LENGTH, KEY_LENGTH, dtype=np.int32)
    hexed = pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets),
                                                   pa.py_buffer(binascii.hexlify(head.tobytes()))])
    return hexed.to_numpy(zero_copy_only=False).astype(object, copy=False)


def _sha256_all(rows: Iterable[tuple[bytes, ...]]) -> np.ndarray:
    """sha256 digest (a V32 array) of each row's UTF-8 fields joined by \\x1f: for the few rows hashed apart."""
    sha = hashlib.sha256
    raw = b"".join([sha(blob).digest() for blob in map(_BSEP.join, rows)])
    return np.frombuffer(raw, dtype="V32").copy()


class _Field:
    """One key field of every row as UTF-8 bytes: `values` (Arrow binary) taken at `codes`, or, when `codes` is
    None, `values` is the column's own object array (distinct texts), converted a slice at a time so that no
    whole-column Arrow copy exists. Never null: an empty cell is b""."""

    def __init__(self, codes: np.ndarray | None, values: pa.Array | np.ndarray) -> None:
        self.codes, self.values = codes, values

    @classmethod
    def constant(cls, value: bytes, n: int) -> _Field:
        return cls(np.zeros(n, dtype=np.int8), pa.array([value], pa.binary()))

    def __len__(self) -> int:
        return len(self.values if self.codes is None else self.codes)

    def at(self, positions: np.ndarray) -> _Field:
        if self.codes is None:
            return _Field(None, self.values[positions])
        return _Field(self.codes[positions], self.values)

    def slice(self, start: int, stop: int) -> pa.Array:
        if self.codes is None:
            values = pa.array(self.values[start:stop], pa.string(), from_pandas=True)
            return (values.fill_null("") if values.null_count else values).cast(pa.binary())
        assert isinstance(self.values, pa.Array)
        return self.values.take(pa.array(self.codes[start:stop]))


def _sha256_rows(fields: list[_Field]) -> np.ndarray:
    """sha256 digest (32 raw bytes each, a V32 array) of each row's fields joined by \\x1f.

    The fields are joined in Arrow (C), a slice of rows at a time so the joined bytes stay small (titles and
    messages make a row ~300 bytes); each row is then hashed straight from the Arrow buffer through a
    memoryview, with no bytes object per row. sha256's per-call cost (~0.3 us on this VM with SHA-NI,
    OpenSSL's; hashlib's builtin and blake2b measured no faster) is the floor of this loop.
    """
    n = len(fields[0])
    sha = hashlib.sha256
    parts = []
    for start in range(0, n, _SLICE):
        stop = min(start + _SLICE, n)
        joined = pc.binary_join_element_wise(*(f.slice(start, stop) for f in fields), _BSEP_SCALAR)
        offsets = np.frombuffer(joined.buffers()[1], dtype=np.int32)[joined.offset:joined.offset + len(joined) + 1]
        data = memoryview(joined.buffers()[2])
        bounds = offsets.tolist()
        parts.append(b"".join([sha(data[a:b]).digest() for a, b in zip(bounds, bounds[1:])]))
    return np.frombuffer(b"".join(parts), dtype="V32").copy()


def _field(frame: pd.DataFrame, column: str) -> _Field:
    """UTF-8 bytes per cell, encoded once per distinct value (cells are str or None, contracts.md; None -> b"");
    the codes of the distinct values are those the frame carries from validate where it has them."""
    if column in CARRIED_CODES:
        codes, uniques = text_values(frame, column)
    else:
        arr = frame[column].to_numpy(dtype=object)
        sample = arr[:20_000]
        if len(pd.unique(sample)) > 0.95 * len(sample):  # all distinct (assignment ids, comments): convert in C
            return _Field(None, arr)
        codes, uniques = factorize_text(arr)
    values = pa.array(np.append(uniques, ""), pa.string(), from_pandas=True).cast(pa.binary())
    return _Field(np.where(codes < 0, len(uniques), codes), values)  # code -1 (None) picks the trailing b""


def _amount_field(cents: pd.Series, raw: pd.Series) -> _Field:
    """UTF-8 of the cents as decimal digits where known (b"150"), else of "raw:<the cell text>"."""
    codes, uniques = pd.factorize(cents.astype("Int64"), use_na_sentinel=True)
    texts = [str(int(u)) for u in uniques]
    unknown = np.flatnonzero(codes == -1)
    if len(unknown):
        raw_values = raw.to_numpy(dtype=object)[unknown]
        raw_texts = ["raw:" + ("" if pd.isna(v) else str(v)) for v in raw_values]
        raw_codes, raw_uniques = pd.factorize(np.array(raw_texts, dtype=object))
        codes = codes.copy()
        codes[unknown] = len(texts) + raw_codes
        texts += list(raw_uniques)
    return _Field(codes, pa.array(texts, pa.string()).cast(pa.binary()))
