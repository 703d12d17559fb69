"""Stable row keys: the identity of a bonus row across re-exports, re-runs and retries.

A key is built from *normalised* values (amount in cents, canonical JSON of title and message), so
re-exporting the same sheet ("1.5" written as "1.50", JSON keys in another order) gives the same keys.
Rows identical in every field are told apart by their occurrence index (0 for the first such row, 1
for the second, ...). A sheet's own `bonus_key` column, where filled, wins: the finance team's id is
the identity.

    row key = sha256("<batch>\\x1frow\\x1f<user>\\x1f<cents or raw:amount>\\x1f<assignment>\\x1f<title>
                      \\x1f<message>\\x1f<comment>\\x1f<occurrence>")  hex, first 32 chars
    with bonus_key: sha256("<batch>\\x1fkey\\x1f<bonus_key>") hex, first 32 chars
Empty cells count as "". \\x1f (unit separator) cannot be typed into a spreadsheet cell.
"""

from __future__ import annotations

import binascii
import hashlib
from itertools import repeat

import numpy as np
import pandas as pd

KEY_LENGTH = 32
_SEP = "\x1f"
_TEXT = ("user_id", "assignment_id", "public_title", "public_message", "private_comment")


def assign_row_keys(checked: pd.DataFrame, batch_id: str) -> pd.DataFrame:
    """`checked` (output of validate_rows) plus `row_key` (32 hex chars), one distinct key per row.

    Invalid rows get keys too (from their raw amount text when it is not an exact cents value), so
    every report row has one. Two rows with the same filled `bonus_key` get the same key; validation
    reports the repeat as an error.
    """
    out = checked.copy(deep=False)  # copy-on-write: adding a column never touches `checked`
    n = len(out)
    if n == 0:
        out["row_key"] = pd.Series([], dtype=object, index=out.index)
        return out
    cols = {c: _text(out[c]) for c in _TEXT}
    amount = _amount_text(out["amount_cents"], out["amount"])
    fields = [cols["user_id"], amount, cols["assignment_id"], cols["public_title"], cols["public_message"],
              cols["private_comment"]]

    # Hash every row as its first occurrence; equal digests then mean equal identities, so only the
    # (rare) repeats need hashing again with their occurrence index.
    digests = _sha256_all(zip(repeat(f"{batch_id}{_SEP}row"), *fields, repeat("0")))
    # 64 bits of each digest identify the row's identity well enough to number repeats (a false
    # match would only give a row occurrence 1 instead of 0: still a distinct, stable key)
    ident, _ = pd.factorize(digests.view(np.uint64).reshape(-1, 4)[:, 0])
    occurrence = pd.Series(ident).groupby(ident, sort=False).cumcount().to_numpy()
    repeats = np.flatnonzero(occurrence)
    if len(repeats):
        again = _sha256_all(
            (f"{batch_id}{_SEP}row", *(f[i] for f in fields), str(int(occurrence[i]))) for i in repeats
        )
        digests[repeats] = again

    if "bonus_key" in out.columns:
        bonus = out["bonus_key"].to_numpy(dtype=object)
        has = np.flatnonzero(pd.notna(bonus))
        if len(has):
            digests[has] = _sha256_all((f"{batch_id}{_SEP}key", str(bonus[i])) for i in has)

    hexed = binascii.hexlify(digests.tobytes()).decode("ascii")
    keys = np.array([hexed[i : i + KEY_LENGTH] for i in range(0, len(hexed), 2 * KEY_LENGTH)], dtype=object)
    out["row_key"] = pd.Series(keys, index=out.index, dtype=object)
    return out


def _sha256_all(rows) -> np.ndarray:
    """sha256 digest (32 raw bytes each, a V32 array) of each row's fields joined by \\x1f.

    Joining and encoding run in C (map); only the hashing is a comprehension. About 1 s per million
    rows on a 2-core VM: sha256's per-call cost is the floor (blake2b measured no faster).
    """
    sha = hashlib.sha256
    raw = b"".join([sha(blob).digest() for blob in map(str.encode, map(_SEP.join, rows))])
    return np.frombuffer(raw, dtype="V32").copy()


def _text(s: pd.Series) -> np.ndarray:
    arr = s.to_numpy(dtype=object)
    missing = arr == None  # noqa: E711 - elementwise; cells are str or None (contracts.md)
    if missing.any():
        arr = arr.copy()
        arr[missing] = ""
    return arr


def _amount_text(cents: pd.Series, raw: pd.Series) -> np.ndarray:
    """Cents as decimal digits where known ("150"), else "raw:<the cell text>"."""
    codes, uniques = pd.factorize(cents.astype("Int64"), use_na_sentinel=True)
    texts = np.array([str(int(u)) for u in uniques] + [""], dtype=object)[codes]
    unknown = np.flatnonzero(codes == -1)
    if len(unknown):
        raw_values = raw.to_numpy(dtype=object)
        texts[unknown] = ["raw:" + ("" if pd.isna(raw_values[i]) else str(raw_values[i])) for i in unknown]
    return texts
