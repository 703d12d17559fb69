"""The spend guard: a run's plan checked against finance's caps before anything is recorded or sent.

A sheet with a wrong column, an extra zero or a pasted-twice block pays real money in minutes; the guard makes
the total a person confirms explicitly, in exact cents, whenever it is larger than finance said is normal:

- `max_run_cents`: the run's total; `max_user_run_cents`: one user's total in the run (the per-bonus cap is
  `max_amount_cents`, a row error checked by validate);
- `confirm_above_cents`: a real run paying more than this needs `--confirm-total` even under every cap.

Over a cap or the threshold, the run pays only with `--confirm-total` equal to the planned total to the cent;
a `--confirm-total` that differs from the planned total always refuses. A pure function of the plan: the
composer decides what a refusal means (exit 2, nothing recorded, nothing sent).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.contract import counted, text_codes
from pipeline.money import format_cents, format_usd

FIRST = 5  # users named in a message; the rest are counted
LISTED = 100  # users over the cap listed in summary.json
_AMOUNT = re.compile(r"\$?(?P<whole>\d{1,3}(?:,\d{3})+|\d+)(?:\.(?P<frac>\d{1,2}))?")
MAX_CONFIRM_CENTS = 10**15  # far above any payout; keeps a pasted figure from becoming a bignum


@dataclass(frozen=True)
class SpendLimits:
    """Finance's caps in cents (None: no cap) and the total a person confirmed (None: not given)."""

    max_run_cents: int | None = None
    max_user_run_cents: int | None = None
    confirm_above_cents: int | None = None
    confirm_cents: int | None = None


@dataclass(frozen=True)
class Verdict:
    """What the guard says of one plan. `refused`: the run must not pay; `reasons`: each cap or threshold
    exceeded, in words; `message`: everything a person needs (figures, by how much, the flag that settles it)."""

    total_cents: int
    rows: int
    users: int
    reasons: tuple[str, ...] = ()
    over_users: tuple[tuple[str, int], ...] = ()  # (user id, cents) over max_user_run_cents, largest first
    over_count: int = 0  # users over max_user_run_cents (over_users lists the first LISTED)
    confirmed: bool = False  # --confirm-total given and equal to the total
    mismatch: bool = False  # --confirm-total given and different from the total
    refused: bool = False
    message: str = ""

    def as_json(self) -> dict[str, object]:
        """For summary.json: amounts as exact decimal text."""
        return {"planned_total": format_cents(self.total_cents), "rows": self.rows, "users": self.users,
                "exceeded": list(self.reasons), "confirmed": self.confirmed, "mismatch": self.mismatch,
                "refused": self.refused, "message": self.message,
                "users_over_cap_count": self.over_count,
                "users_over_cap": [{"user_id": u, "amount": format_cents(c)} for u, c in self.over_users]}


def parse_confirm_total(text: str) -> int:
    """Exact cents of a --confirm-total figure: `1053578.00`, `1053578`, `1,053,578.50` or `$1,053,578.50`.

    Decimal text only, never a float; at most 2 decimals; ValueError with the reason otherwise."""
    value = text.strip()
    m = _AMOUNT.fullmatch(value)
    if m is None:
        raise ValueError(f"not an amount: {text!r} (write it as the run printed it, e.g. 1053578.00)")
    cents = int(m["whole"].replace(",", "")) * 100 + int((m["frac"] or "0").ljust(2, "0"))
    if cents > MAX_CONFIRM_CENTS:
        raise ValueError(f"{text!r} is larger than any payout this tool makes")
    return cents


def check(plan: pd.DataFrame, limits: SpendLimits, *, settled: tuple[int, int] = (0, 0)) -> Verdict:
    """The verdict on `plan` (the rows this run would pay: `user_id`, `amount_cents`) as for a real run; a dry
    run shows the same verdict and is never stopped by it. `settled`: (rows, cents) of the sheets already paid,
    not counted (named when a --confirm-total differs: the usual cause is a run that already paid them)."""
    cents = plan["amount_cents"].to_numpy(dtype="int64", na_value=0)
    total = int(cents.sum())
    codes, n = text_codes(plan, "user_id")  # the codes validate carried (a 1M-row plan: no hashing of texts)
    codes = np.where(codes < 0, n, codes).astype(np.int64)
    users = int(np.count_nonzero(np.bincount(codes, minlength=n + 1)))
    reasons: list[str] = []
    over_users: tuple[tuple[str, int], ...] = ()
    over_count = 0
    if limits.max_run_cents is not None and total > limits.max_run_cents:
        reasons.append(f"{format_usd(total - limits.max_run_cents)} over max_run_cents "
                       f"({format_usd(limits.max_run_cents)})")
    if limits.max_user_run_cents is not None:
        cap = limits.max_user_run_cents
        sums = np.zeros(n + 1, dtype=np.int64)
        np.add.at(sums, codes, cents)  # integer cents: exact
        over = np.flatnonzero(sums > cap)
        if over_count := len(over):
            first = np.full(n + 1, len(codes), dtype=np.int64)
            np.minimum.at(first, codes, np.arange(len(codes)))
            top = over[np.lexsort((first[over], -sums[over]))][:LISTED]  # largest first, then in sheet order
            names = plan["user_id"].to_numpy(dtype=object)[first[top]]
            over_users = tuple((str(u), int(c)) for u, c in zip(names, sums[top]))
            named = ", ".join(f"user {u} {format_usd(c)} ({format_usd(c - cap)} over)" for u, c in over_users[:FIRST])
            more = f" and {over_count - FIRST:,} more" if over_count > FIRST else ""
            who = "1 user is" if over_count == 1 else f"{over_count:,} users are"
            reasons.append(f"{who} over max_user_run_cents ({format_usd(cap)}): {named}{more}")
    if limits.confirm_above_cents is not None and total > limits.confirm_above_cents:
        reasons.append(f"{format_usd(total - limits.confirm_above_cents)} above confirm_above_cents "
                       f"({format_usd(limits.confirm_above_cents)}), where a real run needs confirmation")
    confirm = limits.confirm_cents
    confirmed = confirm is not None and confirm == total
    mismatch = confirm is not None and confirm != total
    head = f"the run would pay {format_usd(total)} ({counted(len(plan), 'row')} to {counted(users, 'user')})"
    rerun = (f"re-run with --confirm-total {format_cents(total)}" if total
             else "nothing is left to pay: re-run without --confirm-total")
    if mismatch:
        assert confirm is not None
        diff = total - confirm
        paid = (f" ({counted(settled[0], 'row')} of these sheets, {format_usd(settled[1])}, are already paid and not "
                "counted)" if settled[0] else "")
        then = f"if {format_usd(total)} is right, {rerun}" if total else rerun
        message = (f"--confirm-total {format_cents(confirm)} ({format_usd(confirm)}) differs from the planned total "
                   f"{format_usd(total)} by {format_usd(abs(diff))} ({'more' if diff > 0 else 'less'} is planned): "
                   f"{head}{paid}; check the sheet against what was signed off; {then}")
        if reasons:
            message += " (it is also " + "; ".join(reasons) + ")"
    elif reasons:
        message = f"{head}, " + "; ".join(reasons) + (
            f": confirmed by --confirm-total {format_cents(total)}" if confirmed else f": {rerun} to pay it anyway")
    else:
        message = head + (", confirmed by --confirm-total" if confirmed else "")
    return Verdict(total, len(plan), users, tuple(reasons), over_users, over_count, confirmed, mismatch,
                   refused=mismatch or (bool(reasons) and not confirmed), message=message)


