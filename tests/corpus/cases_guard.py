"""The spend guard: caps per run, per user and per bonus, the confirmation threshold and --confirm-total; and
texts a spreadsheet would take for formulas, paid (or refused) like any other text.

Most cases pay `guard_run.csv` (4 rows, $85.00: user 1 $30.00 + $10.00, user 2 $25.00, user 3 $20.00) under a
config of their own; the guard's refusal is exit 2 with nothing paid and no report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from case import SHEETS, Case, uid

RUN = "guard_run.csv"
PAID = ((uid(1), "30.00"), (uid(2), "25.00"), (uid(3), "20.00"), (uid(1), "10.00"))


def _run_sheet(path: Path) -> None:
    path.write_bytes((SHEETS / RUN).read_bytes())


def _run(file: str, exit: int, **kw: Any) -> Case:
    return Case(file, exit=exit, write=_run_sheet, **kw)


CASES = [
    Case(RUN, exit=0, about="no cap configured (the local default): paid", paid=PAID, rows=4),
    _run("guard_under_run_cap.csv", 0, config="max_run_cents = 8500\n", paid=PAID,
         about="a total exactly at max_run_cents is not over it: paid"),
    _run("guard_over_run_cap.csv", 2, config="max_run_cents = 5000\n",
         says=("the run would pay $85.00 (4 rows to 3 users)", "$35.00 over max_run_cents ($50.00)",
               "re-run with --confirm-total 85.00 to pay it anyway", "nothing was recorded or sent"),
         about="over max_run_cents: refused, by how much, and the flag that pays it"),
    _run("guard_confirm_equal.csv", 0, config="max_run_cents = 5000\n", args=("--confirm-total", "85.00"),
         paid=PAID, about="over max_run_cents with --confirm-total equal to the planned total: paid"),
    _run("guard_confirm_differs.csv", 2, config="max_run_cents = 5000\n", args=("--confirm-total", "85.01"),
         says=("--confirm-total 85.01 ($85.01) differs from the planned total $85.00 by $0.01",
               "re-run with --confirm-total 85.00"),
         about="a --confirm-total one cent off: refused, both figures shown"),
    _run("guard_confirm_differs_no_cap.csv", 2, args=("--confirm-total", "80"),
         says=("--confirm-total 80.00 ($80.00) differs from the planned total $85.00 by $5.00 (more is planned)",),
         about="a --confirm-total that differs refuses even under every cap"),
    _run("guard_confirm_dollar.csv", 0, config="confirm_above_cents = 0\n", args=("--confirm-total", "$85.00"),
         paid=PAID, about="--confirm-total written with a dollar sign: the same exact cents"),
    _run("guard_user_cap.csv", 2, config="max_user_run_cents = 3000\n",
         says=("1 user is over max_user_run_cents ($30.00)", f"user {uid(1)} $40.00 ($10.00 over)",
               "--confirm-total 85.00"),
         about="one user's total over max_user_run_cents (two rows of $30 and $10): refused, the user named"),
    _run("guard_user_cap_confirmed.csv", 0, config="max_user_run_cents = 3000\n", args=("--confirm-total", "85"),
         paid=PAID, about="over max_user_run_cents, confirmed: paid"),
    _run("guard_threshold.csv", 2, config="confirm_above_cents = 8000\n",
         says=("$5.00 above confirm_above_cents ($80.00), where a real run needs confirmation",
               "--confirm-total 85.00"),
         about="a real run over the confirmation threshold: refused until confirmed"),
    _run("guard_threshold_confirmed.csv", 0, config="confirm_above_cents = 8000\n",
         args=("--confirm-total", "85.00"), paid=PAID, about="over the threshold, confirmed: paid"),
    _run("guard_dry_run_over_cap.csv", 0, config="max_run_cents = 5000\nconfirm_above_cents = 100\n",
         args=("--dry-run",), statuses={2: "planned", 3: "planned", 4: "planned", 5: "planned"},
         says=("Spend guard: a real run would refuse: the run would pay $85.00", "over max_run_cents ($50.00)",
               "above confirm_above_cents ($1.00)"),
         about="--dry-run shows what the guard would say and exits as a dry run does"),
    Case("guard_not_counted.csv", 1, config="max_run_cents = 18400\n",
         paid=((uid(1), "30.00"), (uid(2), "25.00"), (uid(4), "99.00"), (uid(3), "20.00"), (uid(1), "10.00")),
         statuses={4: "invalid", 5: "duplicate", 6: "paid"}, errors=((4, "amount", "not a number"),),
         about="invalid and duplicate rows are not part of the planned total ($184.00 = the cap): paid"),
    Case("guard_bonus_cap.csv", 1, config="max_amount_cents = 2500\n", paid=((uid(1), "25.00"),),
         statuses={2: "paid", 3: "invalid"}, errors=((3, "amount", "above the maximum of $25.00"),),
         about="the per-bonus cap stays a row error (max_amount_cents)"),
    Case("guard_formula_comments.csv", 0,
         paid=((uid(1), "1.00"), (uid(2), "2.00"), (uid(3), "3.00"), (uid(4), "4.00"), (uid(5), "5.00")),
         about="comments that a spreadsheet would take for formulas (=HYPERLINK, +cmd, -1+1, @SUM) are text: paid"),
    Case("guard_formula_cells.csv", 1, paid=((uid(1), "1.00"),),
         statuses={2: "paid", 3: "invalid", 4: "invalid", 5: "invalid", 6: "invalid"},
         errors=((3, "user_id", "user_id"), (4, "amount", "formula not calculated"), (5, "amount", "not a number"),
                 (6, "amount", "not a number")),
         about="a formula-like user id or amount is an invalid row, reported with its text (exports neutralise it)"),
]
