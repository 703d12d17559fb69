"""Which valid rows must not be paid: repeats inside the batch, and rows an earlier run already paid.

Toloka refuses (409 ENTITY_CONFLICT) two bonuses with the same user, amount, title, message and
comment in one request. Across requests it would pay both, which for a finance sheet is almost always
a copy-paste mistake, so the rule is applied to the whole batch: a repeat is reported, not paid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.contract import DEDUPE_POLICIES, MAY_BE_PAID, DedupePolicy, conflict_key, release_memory
from pipeline.money import format_cents


def find_duplicates(valid: pd.DataFrame, policy: DedupePolicy = "keep-first") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(unique, duplicates), both in sheet order, together exactly the rows of `valid`, with `conflict_key`.

    keep-first: the first row of each conflict group is kept; later ones are duplicates whose
    `duplicate_of` names the kept row as "source_file:source_row".
    reject-all: every row of a group with more than one member is a duplicate, none is paid;
    `duplicate_of` names the group's first row (and, for the first row itself, the second one, so
    no row points at itself).
    """
    if policy not in DEDUPE_POLICIES:
        raise ValueError(f"unknown duplicate policy {policy!r}; use one of {', '.join(DEDUPE_POLICIES)}")
    conflicts = conflict_key(valid)
    key = conflicts.to_numpy()
    n = len(valid)
    valid = valid.assign(conflict_key=conflicts)  # computed once: plan spreads conflicts by it
    if n == 0:
        return valid, valid.assign(duplicate_of=pd.Series([], dtype=object, index=valid.index))
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
    release_memory()
    return unique, duplicates


def _refs(files: np.ndarray, rows: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """"file:row" for the given positions only (building it for all rows would cost more than dedupe)."""
    return np.array([f"{files[p]}:{rows[p]}" for p in positions.tolist()], dtype=object)


_LEDGER_COLUMNS = ("attempt", "bonus_id", "paid_run_id", "lookalike", "user_id", "amount_cents", "retryable")


@dataclass(frozen=True)
class LedgerMatch:
    """The unique valid rows split by what the ledger knows of them (every row in exactly one frame).

    `to_plan` gains `attempt` (1 for a new row, last attempt + 1 for a row whose last attempt failed with a
    retryable error, or that was superseded and is back in the sheet). A row Toloka refused for its content
    (a validation refusal) is `refused`: not sent again until the sheet changes it (a new identity). Rows the
    ledger knows under another key with the same content (a `bonus_key` column added to or dropped from a
    paid sheet) carry the ledger's `row_key`: they are the same bonus.
    """

    to_plan: pd.DataFrame
    already_paid: pd.DataFrame  # + run_id, bonus_id
    in_flight: pd.DataFrame  # intent recorded, outcome not read: the run resumes its operation
    unknown: pd.DataFrame  # outcome unreadable: never resent; audit settles it
    refused: pd.DataFrame  # Toloka refused the row's content: reported failed, not resent
    reused: pd.DataFrame  # a bonus_key that already paid other content: + message

    def adopt_keys(self, keyed: pd.DataFrame) -> pd.DataFrame:
        """`keyed` with the key the ledger knows each bonus by (a row matched by content adopts it)."""
        adopted = pd.concat([f["row_key"] for f in (self.to_report(self.to_plan), self.already_paid, self.reused)])
        changed = adopted[adopted.to_numpy() != keyed.loc[adopted.index, "row_key"].to_numpy()]
        if not len(changed):
            return keyed
        out = keyed.copy(deep=False)
        out["row_key"] = out["row_key"].copy()
        out.loc[changed.index, "row_key"] = changed
        return out

    def with_reuse_errors(self, errors: pd.DataFrame) -> pd.DataFrame:
        """Validation `errors` plus one per reused bonus_key: a row error naming the earlier payment."""
        if not len(self.reused):
            return errors
        r = self.reused
        extra = pd.DataFrame({"source_file": r["source_file"].to_numpy(dtype=object),
                              "source_row": r["source_row"].to_numpy(dtype="int64"), "column": "bonus_key",
                              "code": "bonus_key_reused", "message": r["message"].to_numpy(dtype=object)})
        return pd.concat([errors, extra], ignore_index=True)

    def to_report(self, planned: pd.DataFrame) -> pd.DataFrame:
        """`planned` and the rows whose report status comes from the ledger once execution is over."""
        parts = [f for f in (self.in_flight, self.unknown, self.refused) if len(f)]
        return pd.concat([planned, *parts]) if parts else planned


def match_ledger(unique: pd.DataFrame, known: pd.DataFrame, by_content: pd.DataFrame,
                 lookalike: Callable[[pd.DataFrame], np.ndarray]) -> LedgerMatch:
    """Split `unique` by the ledger's state of each row. `known`: ledger rows by row key (Ledger.known_rows);
    `by_content`: ledger rows that may hold money, by content key (Ledger.rows_by_content); `lookalike`
    computes look-alike keys (keys.lookalike_keys), only for the few rows whose content must be compared."""
    release_memory()  # what the stages before freed (the valid rows' copy dedupe was given)
    n = len(unique)
    frame = unique.copy(deep=False)
    if len(known):
        st = frame[["row_key"]].merge(known, on="row_key", how="left")
        status = st["status"].to_numpy(dtype=object)
        cols = {c: st[c].to_numpy(dtype=object) for c in _LEDGER_COLUMNS}
    else:  # a fresh ledger (every dry run of a new batch): no 1M-row merge
        status = np.full(n, None, dtype=object)
        cols = {c: np.full(n, None, dtype=object) for c in _LEDGER_COLUMNS}
    status = np.asarray(np.where(pd.isna(status), None, status), dtype=object)
    by_key = status != None  # noqa: E711 - elementwise; rows the ledger knows under this very key
    # rows whose key is their sheet's bonus_key: compared only where the ledger knows something (a 1M-row
    # object comparison otherwise, on every dry run of a new batch)
    sheet_bonus = np.zeros(n, dtype=bool)
    if by_key.any() or len(by_content):
        sheet_bonus = (frame["row_key"] != frame["content_key"]).to_numpy(dtype=bool)

    if len(by_content):  # adopt the ledger's identity of the same bonus under another key
        ledger_content = by_content["content_key"].fillna(by_content["row_key"])
        ledger_bonus = (by_content["content_key"].notna() & (by_content["content_key"] != by_content["row_key"]))
        by = {c: r for c, r, lb in zip(ledger_content, by_content.itertuples(index=False), ledger_bonus)}
        by_bonus = {c: lb for c, lb in zip(ledger_content, ledger_bonus)}
        content = frame["content_key"].to_numpy(dtype=object)
        row_keys = frame["row_key"].to_numpy(dtype=object).copy()
        for i in np.flatnonzero(pd.isna(pd.Series(status)).to_numpy()):
            hit = by.get(content[i])
            if hit is None or (sheet_bonus[i] and by_bonus[content[i]]):
                continue
            row_keys[i] = hit.row_key
            status[i] = hit.status
            cols["bonus_id"][i], cols["paid_run_id"][i] = hit.bonus_id, hit.paid_run_id
        frame["row_key"] = pd.Series(row_keys, index=frame.index, dtype=object)

    # states compared as codes: a few object comparisons over the distinct states, not over every row
    state_codes, states = pd.factorize(status)
    has_state = state_codes >= 0

    def state_is(*names: str) -> np.ndarray:
        return np.isin(state_codes, [i for i, s in enumerate(states) if s in names])

    may_be_paid = state_is(*MAY_BE_PAID)
    reused = np.zeros(n, dtype=bool)
    check = np.flatnonzero(may_be_paid & sheet_bonus & by_key)  # a bonus_key that already paid something
    if len(check):
        mine = lookalike(frame.iloc[check])
        theirs = cols["lookalike"][check]
        same_money = (cols["user_id"][check] == frame["user_id"].to_numpy(dtype=object)[check]) & (
            pd.array(cols["amount_cents"][check], dtype="Int64") == frame["amount_cents"].iloc[check].array
        ).to_numpy(dtype=bool, na_value=False)
        differs = np.where(pd.isna(theirs), ~same_money, theirs != mine) | ~same_money
        reused[check[differs]] = True
    reused_frame = frame[reused].assign(message=[
        f"bonus_key {b!r} was already used for {'a payment' if s == 'paid' else 'a bonus in flight'} to user {u}"
        f" of {format_cents(int(a))} (bonus {bid or 'not known yet'}, run {run or '?'}); a new bonus needs a new"
        " bonus_key" for b, s, u, a, bid, run in zip(
            frame.loc[reused, "bonus_key"], status[reused], cols["user_id"][reused], cols["amount_cents"][reused],
            cols["bonus_id"][reused], cols["paid_run_id"][reused])])
    live = ~reused

    def pick(mask: np.ndarray) -> pd.DataFrame:
        mask = mask & live
        return frame if mask.all() else frame[mask]  # all new rows (a new batch): no copy of the whole frame

    paid_mask = state_is("paid")
    already = pick(paid_mask).assign(
        run_id=pd.Series(cols["paid_run_id"][paid_mask & live], index=frame.index[paid_mask & live], dtype=object),
        bonus_id=pd.Series(cols["bonus_id"][paid_mask & live], index=frame.index[paid_mask & live], dtype=object))
    refused_mask = state_is("failed") & (_numbers(cols["retryable"], has_state, 1) == 0)
    plan_mask = ~may_be_paid & ~refused_mask
    prev = _numbers(cols["attempt"], has_state, 0)[plan_mask & live]
    to_plan = pick(plan_mask).assign(attempt=pd.Series(prev + 1, index=frame.index[plan_mask & live]))
    return LedgerMatch(to_plan, already, pick(state_is("planned")), pick(state_is("unknown")), pick(refused_mask),
                       reused_frame)


def _numbers(values: np.ndarray, known: np.ndarray, default: int) -> np.ndarray:
    """int64 of a ledger column where the ledger knows the row (`known`), `default` elsewhere and where missing:
    a new batch's 1M unknown rows are not parsed."""
    out = np.full(len(values), default, dtype=np.int64)
    at = np.flatnonzero(known)
    if len(at):
        out[at] = pd.to_numeric(pd.Series(values[at]), errors="coerce").fillna(default).to_numpy(dtype=np.int64)
    return out


def hold_lookalikes(to_plan: pd.DataFrame, recent: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(to_plan, held): rows equal in user, amount, texts and comment to a recent payment of another batch are
    held, not sent (`note` names the earlier batch, run and bonus). `to_plan` needs `lookalike`."""
    if len(recent) == 0 or len(to_plan) == 0:
        return to_plan, to_plan.iloc[:0].assign(note=pd.Series([], dtype=object))
    first = recent.sort_values("paid_at").drop_duplicates("lookalike").set_index("lookalike")
    mask = to_plan["lookalike"].isin(first.index).to_numpy()
    held = to_plan[mask]
    hits = first.loc[held["lookalike"].to_numpy()]
    notes = [f"looks like bonus {b or '(in flight)'} paid under batch {batch!r} by run {run or r2} at {when}; "
             "not sent: pass --allow-repeats to pay it anyway"
             for b, batch, run, r2, when in zip(hits["bonus_id"], hits["batch_id"], hits["paid_run_id"],
                                                hits["run_id"], hits["paid_at"].fillna(hits["updated"]))]
    return to_plan[~mask], held.assign(note=pd.Series(notes, index=held.index, dtype=object))
