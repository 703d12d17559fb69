"""Control totals (pipeline/totals.py): found, checked against the rows SUM() covers, never paid; a total that
disagrees or cannot be checked stops the run, naming both figures."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sheet_factory import canonical_frame, row

from pipeline.totals import ControlTotalMismatch, check_totals, is_label
from pipeline.validate import ValidationRules, validate_rows


def total(label: str | None, amount: str | None, **cells: object) -> dict[str, object]:
    """A totals row as finance writes one: a label (or nothing) in the user id column and the sum."""
    return {"user_id": label, "amount": amount, **cells}


def run(*rows: dict[str, object], files: list[str] | None = None, rules: ValidationRules | None = None
        ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    frames = [canonical_frame(list(rows), "sheet.csv")] if files is None else [
        canonical_frame(list(rows), f) for f in files]
    checked, errors = validate_rows(pd.concat(frames, ignore_index=True), rules or ValidationRules())
    return check_totals(checked, errors)


def refusal(*rows: dict[str, object], rules: ValidationRules | None = None) -> str:
    with pytest.raises(ControlTotalMismatch) as exc:
        run(*rows, rules=rules)
    assert exc.value.exit_code == 2
    return str(exc.value)


@pytest.mark.parametrize("text", ["Total", "total", " TOTAL: ", "Total:", "Итого", "ИТОГО:", "Всего", "Sum",
                                  "Grand\u00a0total", "Subtotal", "итог"])
def test_totals_labels(text: str) -> None:
    assert is_label(text)


@pytest.mark.parametrize("text", ["Totally", "Total 2", "sum of bonuses", "", None, "00000000000000000000000000000001"])
def test_not_totals_labels(text: str | None) -> None:
    assert not is_label(text)


def test_a_sheet_without_a_total_passes_through_untouched() -> None:
    checked, errors = validate_rows(canonical_frame([row(1), row(2, amount="x")]), ValidationRules())
    out, out_errors, totals = check_totals(checked, errors)
    assert out is checked and out_errors is errors and totals.empty and "note" in totals.columns


def test_a_matching_total_is_found_checked_and_its_row_errors_dropped() -> None:
    checked, errors, totals = run(row(1, amount="1.50"), row(2, amount="2.25"), total("Итого", "3.75"))
    assert totals["source_row"].tolist() == [4]
    assert totals["note"].tolist() == ["control total $3.75: checked, equals rows 2-3 above"]
    assert checked["is_valid"].tolist() == [True, True, False]
    assert errors.empty  # "Итого" is no user id, and the title is missing: not errors of a total


def test_a_total_that_differs_refuses_with_both_figures_and_the_difference() -> None:
    text = refusal(row(1, amount="1.50"), row(2, amount="2.25"), total("Total", "4.00"))
    assert ("sheet.csv: the control total in row 4 is $4.00, but the rows above it (rows 2-3) add up to $3.75: "
            "the total is $0.25 more.") in text
    assert "Nothing was paid" in text
    assert "the total is $0.25 less" in refusal(row(1, amount="4.25"), total("Total", "4.00"))


def test_every_row_whose_amount_reads_is_summed_as_sum_would_even_invalid_or_repeated_ones() -> None:
    checked, errors, totals = run(row(1, amount="1.50"), row(1, amount="1.50"), row(2, amount="150", user_id="bad"),
                                  row(3, amount="1.234"), row(4, amount="abc"), total("Total", "153.00"))
    assert len(totals) == 1  # 1.50 + 1.50 + 150.00; 1.234 (sub-cent) and abc cannot be read: not counted
    assert set(errors["source_row"]) == {4, 5, 6}  # the rows' own errors stay
    text = refusal(row(1, amount="1.50"), row(4, amount="abc"), row(5, amount="€2"), total("Total", "5.00"))
    assert "2 row(s) above have an amount that cannot be read and is not counted (row 3, 4)" in text


def test_a_total_follows_the_amount_rules_decimal_comma_included() -> None:
    comma = ValidationRules(decimal_comma=True)
    _, _, totals = run(row(1, amount="1,50"), row(2, amount="2,25"), total("Итого", "3,75"), rules=comma)
    assert totals["note"].tolist() == ["control total $3.75: checked, equals rows 2-3 above"]
    text = refusal(row(1, amount="1.50"), row(2, amount="2.25"), total("Итого", "3,75"))
    assert "row 4 is a control total without an amount that can be read" in text


@pytest.mark.parametrize("amount", [None, "=SUM(B2:B3)", "n/a", "99999999999999999999"])
def test_a_labelled_total_that_cannot_be_read_refuses(amount: str | None) -> None:
    text = refusal(row(1), row(2), total("Total", amount))
    assert "row 4 is a control total without an amount that can be read" in text


def test_a_total_with_nothing_above_refuses() -> None:
    assert "no row above it has an amount" in refusal(total("Total", "3.00"), row(1, amount="1.50"),
                                                      row(2, amount="1.50"))


def test_rows_after_the_last_total_refuse() -> None:
    text = refusal(row(1), row(2), total("Total", "3.00"), row(3), row(4, amount="x"), row(5))
    assert "2 row(s) with amounts come after the sheet's last control total in row 4 (rows 5-7)" in text


def test_subtotals_and_a_grand_total_each_checked() -> None:
    _, _, totals = run(row(1, amount="1.00"), row(2, amount="2.00"), total("Subtotal", "3.00"),
                       row(3, amount="4.00"), total("Subtotal", "4.00"), total("Grand total", "7.00"))
    assert totals["note"].tolist() == [
        "control total $3.00: checked, equals rows 2-3 above",
        "control total $4.00: checked, equals row 5 above",
        "control total $7.00: checked, equals all rows above (rows 2-6, totals not counted)",
    ]
    # a running total (everything above) is as good as a subtotal
    _, _, totals = run(row(1, amount="1.00"), total("Total", "1.00"), row(2, amount="2.00"), total("Total", "3.00"))
    assert len(totals) == 2
    text = refusal(row(1, amount="1.00"), total("Total", "1.00"), row(2, amount="2.00"), total("Total", "2.50"))
    assert ("the control total in row 5 is $2.50, but the rows above it (row 4) add up to $2.00 (since the total in "
            "row 3) and all rows above it to $3.00: the total is $0.50 more.") in text


def test_an_empty_user_id_with_the_sum_and_nothing_else_is_a_total() -> None:
    checked, errors, totals = run(row(1, amount="1.50"), row(2, amount="2.50"), total(None, "4.00"))
    assert totals["source_row"].tolist() == [4] and errors.empty
    # the label may stand in the comment when the user id is empty
    _, errors, totals = run(row(1, amount="1.50"), row(2, amount="2.50"), total(None, "4.00", private_comment="Sum"))
    assert len(totals) == 1 and errors.empty


def test_an_empty_user_id_that_is_not_a_total_stays_an_invalid_row() -> None:
    cases = [
        [row(1, amount="1.50"), row(2, amount="2.50"), total(None, "4.50")],  # not the sum
        [row(1, amount="1.50"), total(None, "1.50")],  # one amount above: a row that lost its user id
        [row(1, amount="1.50"), row(2, amount="2.50"), row(3, user_id=None, amount="4.00")],  # has a title: data
    ]
    for rows in cases:
        checked, errors, totals = run(*rows)
        assert totals.empty and not checked["is_valid"].iloc[-1]
        assert ("user_id", "required") in set(zip(errors["column"], errors["code"]))


def test_each_sheet_file_has_its_own_totals() -> None:
    checked, _, totals = run(row(1, amount="1.00"), row(2, amount="2.00"), total("Total", "3.00"),
                             files=["a.csv", "b.csv"])
    assert totals["source_file"].tolist() == ["a.csv", "b.csv"] and totals["source_row"].tolist() == [4, 4]
    assert checked["is_valid"].tolist() == [True, True, False, True, True, False]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=10_000), min_size=1, max_size=30), st.integers(-3, 3))
def test_a_total_matches_exactly_its_rows_sum(cents: list[int], off: int) -> None:
    rows = [row(i, amount=f"{c // 100}.{c % 100:02d}") for i, c in enumerate(cents)]
    figure = sum(cents) + off
    label = total("Total", f"{figure // 100}.{figure % 100:02d}")
    if off == 0:
        assert len(run(*rows, label)[2]) == 1
    else:
        with pytest.raises(ControlTotalMismatch):
            run(*rows, label)
