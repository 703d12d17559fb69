"""Amounts as finance writes them (money.read_amount): decimal commas, thousands separators, currency signs and
codes, amounts beyond any sane size, and formulas nobody calculated. UTF-8, comma-separated, CRLF, amounts with a
comma quoted: the way Google Sheets exports a sheet in a European or Russian locale.

The default maximum bonus is $100.00, so amounts with thousands separators are refused as "above the maximum";
the message says how each was read ("read as $1,099.50"), which proves the reading."""

from __future__ import annotations

from case import Case, uid

COMMA = ("--decimal-comma",)
FLAG = "pass --decimal-comma if the sheet's locale writes 12,50 for 12.50"

CASES = [
    Case("amounts_decimal_comma.csv", exit=0, args=COMMA, about="12,50 / 0,50 / 1,5 with --decimal-comma",
         paid=((uid(1), "12.50"), (uid(2), "0.50"), (uid(3), "1.50")), rows=3),
    Case("amounts_decimal_comma_without_flag.csv", exit=1, about="12,50 without --decimal-comma: refused, naming it",
         paid=((uid(2), "3.00"),), errors=((2, "amount", "amount_decimal_comma"), (2, "amount", FLAG)),
         statuses={2: "invalid", 3: "paid"}),
    Case("amounts_thousands_spaces.csv", exit=1, args=COMMA,
         about="1 099,50 with a space, NBSP and narrow NBSP between thousands: read exactly, above the maximum",
         paid=((uid(4), "2.00"),),
         errors=((2, "amount", "read as $1,099.50"), (3, "amount", "read as $1,099.50"),
                 (4, "amount", "read as $1,099.50"), (4, "amount", "above the maximum of $100.00")),
         statuses={2: "invalid", 3: "invalid", 4: "invalid", 5: "paid"}),
    Case("amounts_thousands_dots.csv", exit=1, args=COMMA,
         about="1.234,50 read; 1.23,4 is no grouping; a lone 1.234 is ambiguous: refused",
         paid=((uid(3), "7.25"),),
         errors=((2, "amount", "read as $1,234.50"), (3, "amount", "amount_not_a_number"),
                 (5, "amount", "amount_ambiguous"), (5, "amount", "could be 1234 or 1,234")),
         statuses={4: "paid"}),
    Case("amounts_comma_thousands_dot_mode.csv", exit=1,
         about="1,234.50 read as en-US writes it; 1,23 names the flag; a lone 1,234 is ambiguous",
         paid=((uid(2), "12.50"),),
         errors=((2, "amount", "read as $1,234.50"), (4, "amount", "amount_decimal_comma"),
                 (5, "amount", "could be 1234 or 1.234")),
         statuses={3: "paid"}),
    Case("amounts_point_under_comma_flag.csv", exit=1, args=COMMA,
         about="--decimal-comma: 1,234.50 says to drop the flag; 12.50 (as .xlsx numbers arrive) is read",
         paid=((uid(2), "12.50"), (uid(3), "0.75")),
         errors=((2, "amount", "amount_decimal_point"), (2, "amount", "run without --decimal-comma"))),
    Case("amounts_usd_signs.csv", exit=0, about="$12.50, 12.50 USD, USD 12.50, US$1.25, 2.00$: the payout currency",
         paid=((uid(1), "12.50"), (uid(2), "12.50"), (uid(3), "12.50"), (uid(4), "1.25"), (uid(5), "2.00")), rows=5),
    Case("amounts_other_currencies.csv", exit=1, about="€, EUR, £, RUB, ₽: refused, naming the currency found",
         paid=((uid(6), "1.00"),),
         errors=((2, "amount", "is in '€', not USD"), (3, "amount", "is in 'EUR', not USD"),
                 (4, "amount", "is in '£', not USD"), (5, "amount", "is in 'RUB', not USD"),
                 (6, "amount", "is in '₽', not USD"), (6, "amount", "amount_currency")),
         statuses={7: "paid"}),
    Case("amounts_beyond_cap.csv", exit=1,
         about="99999999999999999999: a row error with the value as written, never an int64 overflow",
         paid=((uid(2), "1.50"),),
         errors=((2, "amount", "amount 99999999999999999999 is above the maximum of $100.00"),
                 (4, "amount", "amount -99999999999999999999 is below the minimum of $0.01"),
                 (5, "amount", "amount 99999999999999999999 is above the maximum")),
         statuses={2: "invalid", 3: "paid", 4: "invalid", 5: "invalid"}),
    Case("amounts_formula_text.csv", exit=1, about="=SUM(...) as text: a formula nobody calculated",
         paid=((uid(2), "1.25"),),
         errors=((2, "amount", "formula_not_calculated"),
                 (2, "amount", "formula not calculated: open and save the file in Excel"),
                 (4, "amount", "formula_not_calculated"))),
]
