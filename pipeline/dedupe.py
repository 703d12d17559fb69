"""Which valid rows must not be paid: repeats inside the batch, and rows an earlier run already paid.

Toloka refuses (409 ENTITY_CONFLICT) two bonuses with the same user, amount, title, message and
comment in one request. Across requests it would pay both, which for a finance sheet is almost always
a copy-paste mistake, so the rule is applied to the whole batch: a repeat is reported, not paid.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from pipeline.ingest import factorize_text

CONFLICT_COLUMNS = ("user_id", "amount_cents", "public_title", "public_message", "private_comment")
Policy = Literal["keep-first", "reject-all"]
POLICIES: tuple[str, ...] = ("keep-first", "reject-all")


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
        codes, n_values = _codes(frame[c])
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


def find_duplicates(valid: pd.DataFrame, policy: Policy = "keep-first") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(unique, duplicates), both in sheet order, together exactly the rows of `valid`.

    keep-first: the first row of each conflict group is kept; later ones are duplicates whose
    `duplicate_of` names the kept row as "source_file:source_row".
    reject-all: every row of a group with more than one member is a duplicate, none is paid;
    `duplicate_of` names the group's first row (and, for the first row itself, the second one, so
    no row points at itself).
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown duplicate policy {policy!r}; use one of {', '.join(POLICIES)}")
    key = conflict_key(valid).to_numpy()
    n = len(valid)
    if n == 0:
        return valid.copy(deep=False), valid.assign(duplicate_of=pd.Series([], dtype=object, index=valid.index))
    files = valid["source_file"].to_numpy(dtype=object)
    rows = valid["source_row"].to_numpy()
    # position of each group's first (and second) row
    order = np.arange(n)
    first_pos = np.full(key.max() + 1, -1, dtype=np.int64)
    # keys are numbered by first appearance, so the first row of group g is where key == g first occurs
    _, first_idx = np.unique(key, return_index=True)
    first_pos[: len(first_idx)] = first_idx
    is_first = first_pos[key] == order
    if policy == "keep-first":
        dup_mask = ~is_first
        duplicate_of = _refs(files, rows, first_pos[key[dup_mask]])
    else:
        sizes = np.bincount(key)
        dup_mask = sizes[key] > 1
        later = ~is_first
        second_pos = np.full(len(sizes), -1, dtype=np.int64)
        later_idx = np.flatnonzero(later)
        if len(later_idx):
            k_later = key[later_idx]
            _, first_later = np.unique(k_later, return_index=True)
            second_pos[k_later[first_later]] = later_idx[first_later]
        target = np.where(is_first, second_pos[key], first_pos[key])
        duplicate_of = _refs(files, rows, target[dup_mask])
    unique = valid[~dup_mask]
    duplicates = valid[dup_mask].assign(duplicate_of=pd.Series(duplicate_of, index=valid.index[dup_mask], dtype=object))
    return unique, duplicates


def _refs(files: np.ndarray, rows: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """"file:row" for the given positions only (building it for all rows would cost more than dedupe)."""
    return np.array([f"{files[p]}:{rows[p]}" for p in positions.tolist()], dtype=object)


def split_already_paid(unique: pd.DataFrame, paid: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(to_pay, already_paid) by `row_key`; `already_paid` gains the ledger's `run_id` and `bonus_id`.

    `paid` holds the ledger's paid rows (`row_key`, `run_id`, `bonus_id`); a key listed twice keeps
    its first entry. Sheet order is kept in both outputs.
    """
    if paid is None or len(paid) == 0 or len(unique) == 0:
        empty = unique.iloc[:0].assign(
            run_id=pd.Series([], dtype=object), bonus_id=pd.Series([], dtype=object)
        )
        return unique.copy(deep=False), empty
    ledger = paid.drop_duplicates("row_key", keep="first").set_index("row_key")
    mask = unique["row_key"].isin(ledger.index).to_numpy()
    already = unique[mask]
    hits = ledger.loc[already["row_key"].to_numpy()]
    already = already.assign(
        run_id=pd.Series(hits["run_id"].to_numpy(dtype=object), index=already.index, dtype=object),
        bonus_id=pd.Series(hits["bonus_id"].to_numpy(dtype=object), index=already.index, dtype=object),
    )
    return unique[~mask], already
