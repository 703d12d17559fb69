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
from itertools import repeat

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa

from pipeline.contract import factorize_text

KEY_LENGTH = 32
_SEP = "\x1f"
_BSEP = _SEP.encode()
_LOOKALIKE = b"lookalike"
_TEXT = ("user_id", "assignment_id", "public_title", "public_message", "private_comment")


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
    # Each field as UTF-8 bytes, encoded once per distinct text (sheets repeat users, amounts, titles):
    # joining bytes is much cheaper than joining mixed-width str rows and encoding each joined row.
    cols = {c: _utf8(out[c]) for c in _TEXT}
    amount = _amount_bytes(out["amount_cents"], out["amount"])
    fields = [cols["user_id"], amount, cols["assignment_id"], cols["public_title"], cols["public_message"],
              cols["private_comment"]]
    valid = out["is_valid"].to_numpy(dtype=bool) if "is_valid" in out.columns else np.ones(n, dtype=bool)
    row_prefix = f"{batch_id}{_SEP}row".encode()
    invalid_prefix = f"{batch_id}{_SEP}invalid".encode()
    prefixes = np.where(valid, row_prefix, invalid_prefix).astype(object) if not valid.all() else repeat(row_prefix)

    # Hash every row as its first occurrence (its content key); equal digests then mean equal identities
    # (the valid/invalid prefix keeps the two groups apart), so only the rare repeats need hashing again.
    digests = _sha256_all(zip(prefixes, *fields, repeat(b"0")))
    content = _hex(digests)
    # 64 bits of each digest identify the row's identity well enough to number repeats (a false
    # match would only give a row occurrence 1 instead of 0: still a distinct, stable key)
    ident, _ = pd.factorize(digests.view(np.uint64).reshape(-1, 4)[:, 0])
    occurrence = pd.Series(ident).groupby(ident, sort=False).cumcount().to_numpy()
    repeats = np.flatnonzero(occurrence)
    if len(repeats):
        again = _sha256_all(
            (row_prefix if valid[i] else invalid_prefix, *(f[i] for f in fields), str(int(occurrence[i])).encode())
            for i in repeats
        )
        digests[repeats] = again

    if "bonus_key" in out.columns:
        bonus = out["bonus_key"].to_numpy(dtype=object)
        has = np.flatnonzero(pd.notna(bonus))
        if len(has):
            key_prefix = f"{batch_id}{_SEP}key".encode()
            digests[has] = _sha256_all((key_prefix, str(bonus[i]).encode()) for i in has)
    keys = content if not (len(repeats) or "bonus_key" in out.columns) else _hex(digests)
    out["row_key"] = pd.Series(keys, index=out.index, dtype=object)
    out["content_key"] = pd.Series(content, index=out.index, dtype=object)
    return out


def lookalike_keys(rows: pd.DataFrame) -> np.ndarray:
    """Batch-free hash of what Toloka's 409 rule compares, for valid rows (object array of 32-hex str)."""
    if len(rows) == 0:
        return np.empty(0, dtype=object)
    fields = [_utf8(rows["user_id"]), _amount_bytes(rows["amount_cents"], rows["amount_cents"]),
              _utf8(rows["public_title"]), _utf8(rows["public_message"]), _utf8(rows["private_comment"])]
    return _hex(_sha256_all(zip(repeat(_LOOKALIKE), *fields)))


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


def _sha256_all(rows) -> np.ndarray:
    """sha256 digest (32 raw bytes each, a V32 array) of each row's UTF-8 fields joined by \\x1f.

    Joining runs in C (map); only the hashing is a comprehension. sha256's per-call cost (~0.5 s per
    million rows on a 2-core VM, OpenSSL's; hashlib's builtin and blake2b measured no faster) is the floor.
    """
    sha = hashlib.sha256
    raw = b"".join([sha(blob).digest() for blob in map(_BSEP.join, rows)])
    return np.frombuffer(raw, dtype="V32").copy()


def _utf8(s: pd.Series) -> np.ndarray:
    """Object array of each cell's UTF-8 bytes (None -> b"")."""
    return _utf8_values(s.to_numpy(dtype=object))


def _utf8_values(arr: np.ndarray) -> np.ndarray:
    """UTF-8 bytes per cell, encoded once per distinct value (cells are str or None, contracts.md)."""
    sample = arr[:20_000]
    if len(pd.unique(sample)) > 0.95 * len(sample):  # all distinct (assignment ids): encode each cell
        arr = arr.copy()
        arr[arr == None] = ""  # noqa: E711 - elementwise
        return np.fromiter(map(str.encode, arr), dtype=object, count=len(arr))
    codes, uniques = factorize_text(arr)
    encoded = np.array([u.encode() for u in uniques] + [b""], dtype=object)
    return encoded[codes]  # code -1 (None) picks the trailing b""


def _amount_bytes(cents: pd.Series, raw: pd.Series) -> np.ndarray:
    """UTF-8 of the cents as decimal digits where known (b"150"), else of "raw:<the cell text>"."""
    codes, uniques = pd.factorize(cents.astype("Int64"), use_na_sentinel=True)
    texts = np.array([str(int(u)).encode() for u in uniques] + [b""], dtype=object)[codes]
    unknown = np.flatnonzero(codes == -1)
    if len(unknown):
        raw_values = raw.to_numpy(dtype=object)
        texts[unknown] = [("raw:" + ("" if pd.isna(raw_values[i]) else str(raw_values[i]))).encode() for i in unknown]
    return texts
