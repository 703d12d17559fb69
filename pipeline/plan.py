"""Cut the rows to pay into chunks (one API operation each) with deterministic operation ids.

The operation id is derived from what the chunk *is* (batch, attempt, its row keys), so a crashed or
repeated run re-creates the very same id and Toloka refuses to run it twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

import numpy as np
import pandas as pd

from pipeline.contract import CONFLICT_COLUMNS, conflict_key

# Fixed forever: changing it changes every operation id and breaks resuming old batches.
NAMESPACE = uuid.UUID("5d0f6a8e-3c1b-5e7a-9b2d-0c4e8f1a7b36")


def operation_id_for(batch_id: str, row_keys: Iterable[str], attempt: int = 1) -> str:
    """uuid5(NAMESPACE, batch_id + "\\n" + attempt + "\\n" + sorted row keys joined by "\\n")."""
    text = f"{batch_id}\n{int(attempt)}\n" + "\n".join(sorted(row_keys))
    return str(uuid.uuid5(NAMESPACE, text))


def plan_chunks(to_pay: pd.DataFrame, batch_id: str, chunk_size: int, attempt: int = 1) -> pd.DataFrame:
    """`to_pay` plus `chunk_no` (int64, from 1) and `operation_id` (str UUID), in chunk order.

    Chunks are contiguous runs of `chunk_size` rows in sheet order. Toloka refuses a request holding
    two bonuses with the same user, amount, title, message and comment (409), so if such rows are
    present (dedupe normally removed them) they are spread: the n-th repeat of a bonus goes into a
    later run of chunks than the (n-1)-th, and those runs never share a chunk. Rows keep their relative
    order within each run.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    n = len(to_pay)
    if n == 0:
        return to_pay.assign(chunk_no=pd.Series([], dtype=np.int64, index=to_pay.index),
                             operation_id=pd.Series([], dtype=object, index=to_pay.index))
    # the conflict key travels with the frame from dedupe; rows re-planned from the ledger alone (retry) carry
    # no texts: they were deduplicated when first planned
    if "conflict_key" in to_pay.columns:
        key = to_pay["conflict_key"].to_numpy()
    elif set(CONFLICT_COLUMNS) <= set(to_pay.columns):
        key = conflict_key(to_pay).to_numpy()
    else:
        key = np.arange(n)
    has_conflicts = len(pd.unique(key)) < n  # (dedupe leaves none; other callers may not)
    if has_conflicts:
        layer = pd.Series(key).groupby(key, sort=False).cumcount().to_numpy()
        order = np.lexsort((np.arange(n), layer))  # by layer, then sheet order
        frame = to_pay.iloc[order]
        layer = layer[order]
        chunk_no = np.empty(n, dtype=np.int64)
        next_no = 1
        for lvl in np.unique(layer):
            idx = np.flatnonzero(layer == lvl)
            chunk_no[idx] = next_no + np.arange(len(idx)) // chunk_size
            next_no = int(chunk_no[idx[-1]]) + 1
    else:
        frame = to_pay
        chunk_no = np.arange(n, dtype=np.int64) // chunk_size + 1
    keys = frame["row_key"].to_numpy(dtype=object)
    bounds = np.flatnonzero(np.diff(chunk_no)) + 1
    starts = np.concatenate(([0], bounds))
    ends = np.concatenate((bounds, [n]))
    op_ids = np.empty(n, dtype=object)
    for s, e in zip(starts, ends):
        op_ids[s:e] = operation_id_for(batch_id, keys[s:e].tolist(), attempt)
    return frame.assign(
        chunk_no=pd.Series(chunk_no, index=frame.index, dtype=np.int64),
        operation_id=pd.Series(op_ids, index=frame.index, dtype=object),
    )


def plan_attempts(to_plan: pd.DataFrame, batch_id: str, chunk_size: int) -> pd.DataFrame:
    """Chunks and operation ids for rows grouped by their `attempt` (1 = new; n + 1 after a failed attempt n).

    A row's attempt is part of its operation id, so a row that failed is never re-sent under the id of the
    operation that failed it. Keeps `to_plan`'s index labels (the report places rows by them).
    """
    if len(to_plan) == 0:
        return to_plan.assign(chunk_no=pd.Series(dtype="int64", index=to_plan.index),
                              operation_id=pd.Series(dtype=object, index=to_plan.index))
    attempts = to_plan["attempt"].to_numpy()
    if (attempts == attempts[0]).all():  # the usual case (all new): no copy of the whole frame
        return plan_chunks(to_plan, batch_id, chunk_size, attempt=int(attempts[0]))
    parts, offset = [], 0
    for attempt, group in to_plan.groupby("attempt", sort=True):  # chunk numbers continue across attempts
        part = plan_chunks(group, batch_id, chunk_size, attempt=int(attempt))
        parts.append(part.assign(chunk_no=part["chunk_no"] + offset))
        offset = int(parts[-1]["chunk_no"].max())
    return pd.concat(parts)


def plan_retry(rows: pd.DataFrame, chunk_size: int) -> list[pd.DataFrame]:
    """`payout retry`: rows from the ledger (with `batch_id`, `attempt`, `item`) planned per batch, next attempt."""
    return [plan_attempts(group.assign(attempt=group["attempt"] + 1), str(batch_id), chunk_size)
            for batch_id, group in rows.groupby("batch_id", sort=True)]
