"""Which valid rows must not be paid: repeats inside the batch, and rows an earlier run already paid.

Toloka refuses (409 ENTITY_CONFLICT) two bonuses with the same user, amount, title, message and
comment in one request. Across requests it would pay both, which for a finance sheet is almost always
a copy-paste mistake, so the rule is applied to the whole batch: a repeat is reported, not paid.

The rule also catches *near* repeats, rows Toloka would see as different but a person would not (five $2.00
bonuses to one worker from rows differing only in the comment's case, a non-breaking space, or a trailing
space inside the title's JSON). Rows are compared after normalising (`normalise_text`, `normalise_json_text`):
- in every text, each run of whitespace (any Unicode space: the non-breaking U+00A0 and narrow U+202F, tabs,
  line breaks) becomes one space, invisible U+200B/U+FEFF are dropped, and the ends are trimmed;
- the comment is also case-folded ("Bonus" = "BONUS");
- title and message are compared as JSON: parsed, each string in them normalised as above, and written again
  with sorted keys, so key order and spacing between tokens never matter (their letter case does: the worker
  reads them).
User and amount (in cents) are compared as validated. The assignment id and `bonus_key` are not compared (as in
Toloka's 409 rule): two rows differing only there are repeats too. Row identity (`keys`) never uses any of this.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pandas as pd

from pipeline.contract import (
    DEDUPE_POLICIES,
    MAY_BE_PAID,
    DedupePolicy,
    codes_column,
    conflict_key,
    factorize_text,
    release_memory,
    text_values,
)
from pipeline.money import format_cents


def find_duplicates(valid: pd.DataFrame, policy: DedupePolicy = "keep-first") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(unique, duplicates), both in sheet order, together exactly the rows of `valid`, with `conflict_key`.

    Rows are grouped by `near_duplicate_key` (the 409 identity after normalising: see the module's doc), which is
    also their `conflict_key`: coarser than Toloka's 409 identity (rows equal under it always share the key), so
    plan, which keeps rows of one key out of one request, stays safe.
    keep-first: the first row of each group is kept; later ones are duplicates whose
    `duplicate_of` names the kept row as "source_file:source_row".
    reject-all: every row of a group with more than one member is a duplicate, none is paid;
    `duplicate_of` names the group's first row (and, for the first row itself, the second one, so
    no row points at itself).
    `near_duplicate` is True where the row differs from the one it names, but only in what is normalised.
    """
    if policy not in DEDUPE_POLICIES:
        raise ValueError(f"unknown duplicate policy {policy!r}; use one of {', '.join(DEDUPE_POLICIES)}")
    n = len(valid)
    key = near_duplicate_key(valid)
    valid = valid.assign(conflict_key=pd.Series(key, index=valid.index))  # computed once: plan spreads by it
    if n == 0:
        return valid, valid.assign(duplicate_of=pd.Series([], dtype=object, index=valid.index),
                                   near_duplicate=pd.Series([], dtype=bool, index=valid.index))
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
        target = first_pos[key]
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
    at = target[dup_mask]
    index = valid.index[dup_mask]
    unique = valid[~dup_mask]
    duplicates = valid[dup_mask].assign(duplicate_of=pd.Series(_refs(files, rows, at), index=index, dtype=object),
                                        near_duplicate=pd.Series(_differ(valid, dup_mask, at), index=index))
    release_memory()
    return unique, duplicates


def near_duplicate_key(valid: pd.DataFrame) -> np.ndarray:
    """Integer id of each valid row's 409 identity after normalising (module doc), numbered by first appearance:
    rows with equal ids are repeats. Rows equal under Toloka's 409 rule (`contract.conflict_key`) always share one.

    Each distinct title and message is normalised once; comments (distinct on almost every row) only on rows
    that already share user, amount, title and message with another row."""
    n = len(valid)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    # conflict_key reads title and message through their codes (contract.CARRIED_CODES): the codes of the
    # normalised texts stand in for the texts' own, and the comment is left for below
    base = valid[["user_id", "amount_cents", "public_title", "public_message"]].assign(
        private_comment=pd.Series(np.full(n, None, dtype=object), index=valid.index, dtype=object),
        **{codes_column(c): _normalised_codes(valid, c) for c in ("public_title", "public_message")})
    if codes_column("user_id") in valid.columns:
        base[codes_column("user_id")] = valid[codes_column("user_id")].to_numpy()
    group = conflict_key(base).to_numpy()  # (user, amount, title, message)
    comments = valid["private_comment"].to_numpy(dtype=object)
    shared = np.flatnonzero(np.bincount(group)[group] > 1)
    comment = np.zeros(n, dtype=np.int64)  # 0: missing, or alone in its group (merges nothing)
    if len(shared):
        codes, uniques = factorize_text(comments[shared])
        folded = np.array([normalise_text(u).casefold() or None for u in uniques], dtype=object)
        folded_codes, _ = factorize_text(folded)
        comment[shared] = np.append(folded_codes, -1)[codes] + 1  # missing (-1) and "" -> 0
    combined, _ = pd.factorize(group * (int(comment.max()) + 1) + comment)  # both < n: no int64 overflow
    return combined.astype(np.int64)


def _normalised_codes(valid: pd.DataFrame, column: str) -> np.ndarray:
    """int32 code of each row's title or message once normalised (-1: missing): each distinct text normalised
    once, and texts equal once normalised share a code."""
    codes, uniques = text_values(valid, column)
    done = np.array([None if u is None else normalise_json_text(u) for u in uniques], dtype=object)
    merged, _ = pd.factorize(done)  # None -> -1
    return np.append(merged, -1)[codes].astype(np.int32)  # code -1 (missing) picks the appended -1


_INVISIBLE = ("\u200b", "\ufeff")


def normalise_text(text: str) -> str:
    """Whitespace runs -> one space, zero-width space and BOM dropped, ends trimmed: "a\u00a0 b " -> "a b".

    Whitespace is what `str.split()` splits on: every Unicode space (U+00A0, U+202F, U+2007 ...), tabs and line
    breaks."""
    if any(c in text for c in _INVISIBLE):
        text = text.replace("\u200b", "").replace("\ufeff", "")
    return " ".join(text.split())


def normalise_json_text(text: str) -> str | None:
    """A title or message as compared: its JSON with every string normalised (`normalise_text`), keys sorted, no
    spacing; a text that is not JSON is normalised as text."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return normalise_text(text) or None
    if normalise_text(text) != text or "\\" in text or '" ' in text or ' "' in text:  # else: no string to fix
        value = _normalise_json(value)
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _normalise_json(value: Any) -> Any:
    if isinstance(value, str):
        return normalise_text(value)
    if isinstance(value, dict):
        return {normalise_text(k): _normalise_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise_json(v) for v in value]
    return value


def _differ(valid: pd.DataFrame, dup_mask: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Whether each duplicate differs from the row it names in title, message or comment as written (user and
    amount are equal in a group): a near repeat, not an exact one. Only the few duplicates are compared."""
    differ = np.zeros(len(at), dtype=bool)
    for c in ("public_title", "public_message", "private_comment"):
        values = valid[c].to_numpy(dtype=object)
        differ |= values[dup_mask] != values[at]  # elementwise; None == None holds
    return differ


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
