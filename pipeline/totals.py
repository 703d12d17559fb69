"""Control totals: the row finance adds below its bonuses ("Total", "Итого", or an empty user id next to the sum)
is recognised, never paid, and checked against the rows it adds up; a total that disagrees stops the run.

Why: a total is finance's own check that the sheet holds the rows it meant to pay. A row lost or added in
an export, a copy or a merge shows up as a total that no longer matches; paying anyway would pay the wrong set.

Rules, per sheet file, in the order of its rows (README "Control totals"):
- A totals row is a row whose user id (or, when the user id is empty, whose comment or assignment id) is a
  totals label (`LABELS`: "Total", "Total:", "Итого", "Всего", "Sum", "Subtotal", "Grand total", ... in any case
  and spacing), or a row with an empty user id, an amount and nothing else whose amount equals what a total
  there would be (with at least two amounts summed, so a data row that lost its user id is not taken for one).
- What a total adds up is what finance's SUM() covers: every row above it that is not itself a total and whose
  amount reads as an exact amount (`amount_cents`), whatever else is wrong with the row (invalid and duplicate
  rows are in finance's range too). An amount that cannot be read counts as nothing, as SUM() skips text; the
  message then names those rows.
- A total matches when it equals the rows since the previous total (a subtotal) or all rows above it (a running
  or grand total, subtotals not counted twice).
- The run refuses to pay (exit 2, nothing sent) when a total does not match, when a labelled total has no
  readable amount, or when rows with amounts follow the sheet's last total (no total covers them).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.contract import text_values
from pipeline.errors import PayoutError
from pipeline.money import format_usd

LABELS = frozenset({"total", "totals", "subtotal", "sub-total", "sub total", "grand total", "sum", "итого", "итог",
                    "всего", "подытог"})
STATUS = "control_total"
# the columns a total without a label must leave empty (without_message is a bool by now: not looked at)
_EMPTY_IN_A_TOTAL = ("assignment_id", "private_comment", "public_title", "public_message", "bonus_key")
_SPACE = re.compile(r"\s+")
_SHOWN = 5  # unreadable rows named in a message
_USER_ID = r"^[0-9a-f]{32}$"


class ControlTotalMismatch(PayoutError):
    """A sheet's own control total disagrees with its rows, or cannot be checked: nothing is paid."""


def is_label(text: object) -> bool:
    """"Total", " ИТОГО: ", "Grand\u00a0total" -> True."""
    if not isinstance(text, str) or len(text) > 40:
        return False
    return _SPACE.sub(" ", text).strip().rstrip(":").strip().casefold() in LABELS


def check_totals(checked: pd.DataFrame, errors: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(checked, errors, totals): the totals rows found in `checked` (validate's output, in sheet order), each with
    a `note` saying what it was checked against; they are marked not valid and their validation errors dropped.
    `totals` keeps `checked`'s index labels and columns. Raises ControlTotalMismatch listing every problem."""
    labelled, no_user = _labelled(checked)
    unlabelled = _unlabelled_candidates(checked, no_user) & ~labelled
    if not (labelled.any() or unlabelled.any()):  # the usual sheet: no copies, nothing to do
        return checked, errors, checked.iloc[:0].assign(note=pd.Series([], dtype=object))
    files = checked["source_file"].to_numpy(dtype=object)
    rows = checked["source_row"].to_numpy(dtype=np.int64)
    cents = checked["amount_cents"].astype("Int64")
    has = cents.notna().to_numpy()
    values = cents.to_numpy(dtype=np.int64, na_value=0)
    written = checked["amount"].notna().to_numpy()
    found: list[int] = []
    notes: list[str] = []
    problems: list[str] = []
    for f in pd.unique(files[labelled | unlabelled]):
        at = np.flatnonzero(files == f)
        sheet = _Sheet(str(f), rows[at], values[at], has[at], written[at], labelled[at])
        for k, note in sheet.check(np.flatnonzero(unlabelled[at])):
            found.append(int(at[k]))
            notes.append(note)
        problems += sheet.problems
    if problems:
        raise ControlTotalMismatch("\n".join(problems) + "\nNothing was paid: correct the rows or the total and run "
                                                          "the same command again.")
    positions = np.array(sorted(found), dtype=np.int64)
    order = np.argsort(found, kind="stable")
    totals = checked.iloc[positions].assign(note=np.asarray(notes, dtype=object)[order], is_valid=False)
    out = checked.copy(deep=False)
    valid = out["is_valid"].to_numpy(dtype=bool).copy()
    valid[positions] = False
    out["is_valid"] = valid
    at_total = pd.MultiIndex.from_arrays([files[positions], rows[positions]])
    mine = pd.MultiIndex.from_arrays([errors["source_file"].to_numpy(dtype=object),
                                      errors["source_row"].to_numpy(dtype=np.int64)]).isin(at_total)
    return out, errors[~mine].reset_index(drop=True), totals


def _labelled(checked: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(labelled, no user id) per row: labelled as a total by the user id, or (user id empty) by the comment or
    the assignment id."""
    codes, uniques = text_values(checked, "user_id")
    # only short texts that are no user id can be labels: the distinct user ids of a sheet never reach Python
    texts = pa.array(uniques, type=pa.string())
    maybe = pc.and_(pc.less_equal(pc.utf8_length(texts), 40), pc.invert(pc.match_substring_regex(texts, _USER_ID)))
    at = np.flatnonzero(pc.fill_null(maybe, False).to_numpy(zero_copy_only=False))
    is_total = np.zeros(len(uniques) + 1, dtype=bool)
    is_total[at] = [is_label(u) for u in uniques[at]]
    label = is_total[codes]  # code -1 (no user id) picks the last, False
    no_user = codes < 0
    if no_user.any():
        for column in ("private_comment", "assignment_id"):
            if column in checked.columns:
                texts = checked[column].to_numpy(dtype=object)
                at = np.flatnonzero(no_user)
                label[at] |= np.fromiter((is_label(t) for t in texts[at]), dtype=bool, count=len(at))
    return label, no_user


def _unlabelled_candidates(checked: pd.DataFrame, no_user: np.ndarray) -> np.ndarray:
    """Rows that may be a total without a label: no user id, a readable amount, nothing else."""
    at = np.flatnonzero(no_user & checked["amount_cents"].notna().to_numpy())
    for column in _EMPTY_IN_A_TOTAL:
        if len(at) and column in checked.columns:
            at = at[pd.isna(checked[column].to_numpy(dtype=object)[at])]
    candidate = np.zeros(len(checked), dtype=bool)
    candidate[at] = True
    return candidate


class _Sheet:
    """One sheet file's rows: exact prefix sums of the amounts of its data rows, and its totals checked in order."""

    def __init__(self, name: str, rows: np.ndarray, values: np.ndarray, has: np.ndarray, written: np.ndarray,
                 labelled: np.ndarray) -> None:
        self.name, self.rows, self.values, self.has, self.labelled = name, rows, values, has, labelled
        data = np.where(labelled, 0, values)
        # high and low 32-bit halves summed apart: every prefix sum exact, whatever the count (money.exact_sum)
        self._high = np.concatenate([[0], np.cumsum(data >> 32)])
        self._low = np.concatenate([[0], np.cumsum(data & 0xFFFFFFFF)])
        self._count = np.concatenate([[0], np.cumsum(has & ~labelled)])
        self.unreadable = written & ~has & ~labelled  # amount text that is no exact amount: SUM() skips it
        self.problems: list[str] = []

    def total(self, a: int, b: int) -> int:
        """Exact sum of the data amounts of rows [a, b)."""
        return int(self._high[b] - self._high[a]) * 2**32 + int(self._low[b] - self._low[a])

    def count(self, a: int, b: int) -> int:
        return int(self._count[b] - self._count[a])

    def check(self, unlabelled: np.ndarray) -> list[tuple[int, str]]:
        """(row position, note) of each total found; problems go to `self.problems`."""
        found: list[tuple[int, str]] = []
        prev = -1  # position of the last total
        taken = taken_count = 0  # unlabelled totals above: inside the prefix sums, taken out of running sums
        for k in sorted(np.flatnonzero(self.labelled).tolist() + unlabelled.tolist()):
            block, block_n = self.total(prev + 1, k), self.count(prev + 1, k)
            above, above_n = self.total(0, k) - taken, self.count(0, k) - taken_count
            figure = int(self.values[k])
            if not self.labelled[k]:
                if not ((block_n >= 2 and figure == block) or (above_n >= 2 and figure == above)):
                    continue  # an ordinary row that lost its user id (validation reports it)
                taken, taken_count = taken + figure, taken_count + 1
            elif not self.has[k]:
                self.problems.append(f"{self.name}: row {self.rows[k]} is a control total without an amount that can "
                                     "be read (see its amount in the sheet); fill in the total or delete the row.")
            elif above_n == 0:
                self.problems.append(f"{self.name}: row {self.rows[k]} is a control total ({format_usd(figure)}) "
                                     "but no row above it has an amount: a total goes below the rows it adds up.")
            elif not ((block_n and figure == block) or figure == above):
                self.problems.append(self._mismatch(k, prev, figure, block, above))
            found.append((k, self._note(k, prev, figure, block, block_n)))
            prev = k
        if found and (after := self.count(prev + 1, len(self.rows))):
            last = self.rows[prev]
            self.problems.append(
                f"{self.name}: {after:,} row(s) with amounts come after the sheet's last control total in row {last} "
                f"({self._span(prev + 1, len(self.rows))}): no total covers them; put the total below them "
                "(and include them in its sum) or remove them.")
        return found

    def _span(self, a: int, b: int) -> str:
        if b <= a:
            return "no rows"
        return f"row {self.rows[a]}" if b - a == 1 else f"rows {self.rows[a]}-{self.rows[b - 1]}"

    def _note(self, k: int, prev: int, figure: int, block: int, block_n: int) -> str:
        if block_n and figure == block:
            return f"control total {format_usd(figure)}: checked, equals {self._span(prev + 1, k)} above"
        return f"control total {format_usd(figure)}: checked, equals all rows above ({self._span(0, k)}, " \
               "totals not counted)"

    def _mismatch(self, k: int, prev: int, figure: int, block: int, above: int) -> str:
        diff = figure - above if prev < 0 else figure - block
        more = f"the total is {format_usd(abs(diff))} {'more' if diff > 0 else 'less'}"
        text = (f"{self.name}: the control total in row {self.rows[k]} is {format_usd(figure)}, but the rows above "
                f"it ({self._span(prev + 1, k)}) add up to {format_usd(block)}")
        if prev >= 0:
            text += f" (since the total in row {self.rows[prev]}) and all rows above it to {format_usd(above)}"
        text += f": {more}."
        skipped = np.flatnonzero(self.unreadable[:k])
        if len(skipped):
            named = ", ".join(str(self.rows[i]) for i in skipped[:_SHOWN]) + (" ..." if len(skipped) > _SHOWN else "")
            text += (f" {len(skipped):,} row(s) above have an amount that cannot be read and is not counted "
                     f"(row {named}).")
        return text
