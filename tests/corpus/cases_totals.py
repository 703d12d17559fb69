"""Control totals (pipeline/totals.py): the sheet's own "Total" row is found, checked and never paid; a total
that disagrees with the rows above it, or cannot be read, stops the run before anything is sent."""

from __future__ import annotations

from case import Case, uid

PAID = ((uid(1), "1.50"), (uid(2), "2.25"))

CASES = [
    Case("totals_match.csv", exit=0, about="Total = the sum of the rows above: checked, not paid",
         paid=PAID, statuses={2: "paid", 3: "paid", 4: "control_total"}, rows=3),
    Case("totals_mismatch.csv", exit=2, about="Total 4.00 for rows adding up to 3.75: nothing paid, both figures",
         says=("control total in row 4 is $4.00", "add up to $3.75", "the total is $0.25 more", "Nothing was paid")),
    Case("totals_russian_decimal_comma.csv", exit=0, args=("--decimal-comma",),
         about="Итого: 3,75 under --decimal-comma", paid=PAID, statuses={4: "control_total"}, rows=3),
    Case("totals_empty_user_id.csv", exit=0, about="an empty user id with the sum and nothing else is a total",
         paid=PAID, statuses={4: "control_total"}, rows=3),
    Case("totals_empty_user_id_not_a_total.csv", exit=1,
         about="an empty user id with an amount that is not the sum: an ordinary row missing its user id",
         paid=PAID, errors=((4, "user_id", "user id is missing"),), statuses={4: "invalid"}),
    Case("totals_subtotals.csv", exit=0, about="two subtotals and a grand total, each checked",
         paid=((uid(1), "1.00"), (uid(2), "2.00"), (uid(3), "4.00"), (uid(4), "0.50")),
         statuses={4: "control_total", 7: "control_total", 8: "control_total"}, rows=7),
    Case("totals_rows_after_total.csv", exit=2, about="a row below the total: no total covers it, nothing paid",
         says=("come after the sheet's last control total in row 4", "Nothing was paid")),
    Case("totals_formula_total.csv", exit=2, about="Total =SUM(B2:B3) never calculated: cannot be checked",
         says=("row 4 is a control total without an amount that can be read",)),
    Case("totals_with_invalid_rows.csv", exit=1,
         about="SUM() covers every row whose amount reads, invalid ones too; n/a counts as nothing",
         paid=((uid(1), "1.50"), (uid(2), "1.50")),
         statuses={2: "paid", 3: "invalid", 4: "paid", 5: "invalid", 6: "control_total"}, rows=5),
    Case("totals_thousands_nbsp.csv", exit=0, args=("--decimal-comma",),
         about="Всего 1 235,00 (NBSP) over 13 rows of 95,00", paid=tuple((uid(n), "95.00") for n in range(1, 14)),
         statuses={15: "control_total"}, rows=14),
]
