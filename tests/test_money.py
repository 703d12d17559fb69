"""Money helpers: exact text both ways, never float arithmetic."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sandbox_fixtures import TOKEN
from sheet_factory import row, write_csv

from pipeline.cli import main
from pipeline.money import AmountProblem, cents_from_json, exact_sum, format_cents, format_usd, read_amount
from pipeline.report import read_rows, summarize


def test_formats_for_the_wire_and_for_people() -> None:
    assert [format_cents(c) for c in (0, 7, 150, 10000, -5)] == ["0.00", "0.07", "1.50", "100.00", "-0.05"]
    assert format_usd(123456789) == "$1,234,567.89"


@given(st.integers(min_value=0, max_value=10**9))
def test_any_amount_survives_the_wire_and_orjson_exactly(cents: int) -> None:
    sent = orjson.dumps({"amount": orjson.Fragment(format_cents(cents))})
    received = orjson.loads(sent)["amount"]
    assert cents_from_json(received) == cents
    assert Decimal(format_cents(cents)) * 100 == cents


# --- reading amounts as finance writes them (money.read_amount) ------------------------------------------


@pytest.mark.parametrize("text, cents", [
    ("12.50", 1250), ("12.5", 1250), ("12", 1200), ("12.", 1200), (".5", 50), ("0012.50", 1250), ("12.500", 1250),
    ("$12.50", 1250), ("$ 12.50", 1250), ("12.50$", 1250), ("US$12.50", 1250), ("USD 12.50", 1250),
    ("12.50 USD", 1250), ("12.50USD", 1250), ("usd 12.50", 1250), ("12.50\u00a0USD", 1250),
    ("1,234.50", 123450), ("1,234,567", 123456700), ("1,234,567.89", 123456789), ("1 234", 123400), ("1 234.50", 123450),
    ("1\u00a0234.50", 123450), ("-1.50", -150), ("-$1.50", -150), ("$-1.50", -150), ("\u22121.50", -150),
    ("-0", 0), ("9999999999.99", 999999999999),
])
def test_amounts_with_a_decimal_point(text: str, cents: int) -> None:
    a = read_amount(text)
    assert a.problem is None and a.cents() == cents, a


@pytest.mark.parametrize("text, cents", [
    ("12,50", 1250), ("12,5", 1250), ("0,50", 50), ("12,", 1200), (",5", 50), ("1 234,50", 123450),
    ("1\u00a0234,50", 123450), ("1\u202f234,50", 123450), ("1\u2009234,50", 123450), ("1.234,50", 123450),
    ("1.234.567,89", 123456789), ("1 234 567", 123456700), ("12,50 USD", 1250), ("$12,50", 1250),
    # a single dot that makes no thousands group is a decimal point: .xlsx and Parquet numbers arrive so
    ("12.50", 1250), ("0.5", 50), ("1234.5", 123450),
    # ... and two that do are the locale's thousands separators
    ("1.234.567", 123456700),
])
def test_amounts_with_a_decimal_comma(text: str, cents: int) -> None:
    a = read_amount(text, decimal_comma=True)
    assert a.problem is None and a.cents() == cents, a


@pytest.mark.parametrize("text, decimal_comma, problem, detail", [
    ("12,50", False, AmountProblem.DECIMAL_COMMA, ""),
    ("1 234,50", False, AmountProblem.DECIMAL_COMMA, ""),
    ("1.234,50", False, AmountProblem.DECIMAL_COMMA, ""),
    ("0,125", False, AmountProblem.DECIMAL_COMMA, ""),
    ("1,234.50", True, AmountProblem.DECIMAL_POINT, ""),
    ("1 234.50", True, AmountProblem.DECIMAL_POINT, ""),
    ("1.23,4", True, AmountProblem.NOT_A_NUMBER, ""),  # groups of 3 digits only
    ("1.23,4", False, AmountProblem.NOT_A_NUMBER, ""),
    ("12,34,567", False, AmountProblem.NOT_A_NUMBER, ""),
    ("0,123.50", False, AmountProblem.NOT_A_NUMBER, ""),  # a first group never starts with 0
    ("1 234.567,50", True, AmountProblem.NOT_A_NUMBER, ""),  # one separator kind per amount
    ("12 34", False, AmountProblem.NOT_A_NUMBER, ""),
    ("1,234", False, AmountProblem.AMBIGUOUS, ""),  # 1234, or 1.234 in a decimal-comma locale
    ("$1,234", False, AmountProblem.AMBIGUOUS, ""),
    ("1.234", True, AmountProblem.AMBIGUOUS, ""),  # 1234 in de-DE, or 1.234 as a program writes it
    ("€4.00", False, AmountProblem.CURRENCY, "€"),
    ("4.00 EUR", False, AmountProblem.CURRENCY, "EUR"),
    ("4,00 €", True, AmountProblem.CURRENCY, "€"),
    ("£3", False, AmountProblem.CURRENCY, "£"),
    ("5 ₽", True, AmountProblem.CURRENCY, "₽"),
    ("RUB 5", False, AmountProblem.CURRENCY, "RUB"),
    ("5 руб.", True, AmountProblem.CURRENCY, "руб."),
    ("CA$5", False, AmountProblem.CURRENCY, "CA$"),
    ("$12$", False, AmountProblem.NOT_A_NUMBER, ""),
    ("=SUM(B2:B4)", False, AmountProblem.FORMULA, ""),
    ("=0.1+0.2", True, AmountProblem.FORMULA, ""),
    ("99999999999999999999", False, AmountProblem.BEYOND_CAP, ""),
    ("12345678901", False, AmountProblem.BEYOND_CAP, ""),
    ("99 999 999 999 999,00", True, AmountProblem.BEYOND_CAP, ""),
    ("abc", False, AmountProblem.NOT_A_NUMBER, ""),
    ("abc12", False, AmountProblem.NOT_A_NUMBER, ""),
    ("eur 5", False, AmountProblem.NOT_A_NUMBER, ""),
    ("1e2", False, AmountProblem.NOT_A_NUMBER, ""),
    ("12.5.1", True, AmountProblem.NOT_A_NUMBER, ""),
    ("(12.50)", False, AmountProblem.NOT_A_NUMBER, ""),
    ("12.50-", False, AmountProblem.NOT_A_NUMBER, ""),
    ("\uff11\uff12", False, AmountProblem.NOT_A_NUMBER, ""),  # full-width digits: not ASCII
    ("$", False, AmountProblem.NOT_A_NUMBER, ""),
])
def test_texts_that_are_not_amounts(text: str, decimal_comma: bool, problem: AmountProblem, detail: str) -> None:
    a = read_amount(text, decimal_comma=decimal_comma)
    assert (a.problem, a.detail, a.cents()) == (problem, detail, None)


def test_beyond_the_cap_keeps_its_sign_and_never_converts_a_huge_digit_string() -> None:
    assert read_amount("-" + "9" * 30).negative and not read_amount("9" * 30).negative
    assert read_amount("1" * 30_000).problem is AmountProblem.BEYOND_CAP  # int() would refuse > 4,300 digits
    assert read_amount("0." + "0" * 30_000 + "1").decimals == 30_001
    assert read_amount("0" * 30 + "12.50").cents() == 1250


def test_sub_cent_decimals_give_no_cents() -> None:
    assert read_amount("1.234").decimals == 3 and read_amount("1.234").cents() is None
    assert read_amount("1,234", decimal_comma=True).cents() is None


LOCALE_FORMS = [  # (thousands separator, decimal mark, decimal_comma)
    (",", ".", False), (" ", ".", False), ("\u00a0", ".", False),
    (" ", ",", True), ("\u00a0", ",", True), ("\u202f", ",", True), (".", ",", True),
]


@given(st.integers(min_value=-(10**12) + 1, max_value=10**12 - 1), st.sampled_from(LOCALE_FORMS),
       st.sampled_from(["", "$", "USD "]), st.booleans())
def test_any_amount_written_in_any_accepted_form_reads_back_exactly(cents: int, form: tuple[str, str, bool],
                                                                    sign: str, grouped: bool) -> None:
    sep, mark, comma = form
    whole = f"{abs(cents) // 100:,}".replace(",", sep) if grouped else str(abs(cents) // 100)
    text = f"{'-' if cents < 0 else ''}{sign}{whole}{mark}{abs(cents) % 100:02d}"
    a = read_amount(text, decimal_comma=comma)
    assert a.cents() == cents, (text, a)


@given(st.integers(min_value=10**12, max_value=10**40), st.booleans())
def test_any_amount_beyond_the_cap_is_refused_never_wrapped(cents: int, comma: bool) -> None:
    text = f"{cents // 100}{',' if comma else '.'}{cents % 100:02d}"
    assert read_amount(text, decimal_comma=comma).problem is AmountProblem.BEYOND_CAP


@given(st.lists(st.integers(min_value=-(10**12) + 1, max_value=10**12 - 1), max_size=200))
def test_exact_sum_is_the_true_sum(values: list[int]) -> None:
    assert exact_sum(np.array(values, dtype=np.int64)) == sum(values)


def test_exact_sum_does_not_wrap_where_int64_does() -> None:
    values = np.full(10_000_000, 999_999_999_999, dtype=np.int64)  # 10M rows at the cap: 1e19 > int64 max
    assert int(values.sum()) != 10_000_000 * 999_999_999_999  # numpy wraps silently
    assert exact_sum(values) == 10_000_000 * 999_999_999_999


def test_amounts_beyond_the_cap_never_poison_the_report_totals(sandbox, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 9: 99999999999999999999 was reported as -0.01 and summed to "-92233720268547652.31" (int64)."""
    monkeypatch.setenv("TOLOKA_TOKEN", TOKEN)
    huge = "99999999999999999999"
    sheet = write_csv(tmp_path / "sheet.csv", [row(1, amount=huge), row(2, amount=huge), row(3, amount="-" + huge),
                                              row(4, amount="150"), row(5, amount="9999999999.99"),
                                              row(6, amount="1.50")])
    code = main(["run", str(sheet), "--api-url", sandbox.url, "--batch-id", "b", "--ledger",
                 str(tmp_path / "ledger.sqlite"), "--out", str(tmp_path / "out")])
    assert code == 1
    [run_dir] = (tmp_path / "out").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    # invalid rows count with the amounts that were read exactly (150.00 and 9,999,999,999.99); the ones beyond
    # the cap are nothing, their text is in the errors column
    assert summary["amounts"]["invalid"] == summary["amount_invalid"] == "10000000149.99"
    assert summary["amounts"]["paid"] == "1.50" and summary["counts"]["invalid"] == 5
    rows = read_rows(run_dir)
    assert rows["amount_cents"].tolist() == [pd.NA, pd.NA, pd.NA, 15000, 999999999999, 150]
    assert [e[0]["message"] for e in rows["errors"][:3]] == [
        f"amount {huge} is above the maximum of $100.00", f"amount {huge} is above the maximum of $100.00",
        f"amount -{huge} is below the minimum of $0.01"]


def test_the_summary_sums_exactly_where_int64_would_wrap() -> None:
    rows = pd.DataFrame({"status": ["invalid"] * 3, "amount_cents": pd.array([2**62, 2**62, 2**62], dtype="Int64")})
    assert summarize(rows, {}).cents["invalid"] == 3 * 2**62  # int64 wraps at 2**63
