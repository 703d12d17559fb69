from __future__ import annotations

import json
from decimal import Decimal

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sheet_factory import canonical_frame, row

from pipeline.validate import ERROR_COLUMNS, ErrorCode, ValidationRules, validate_rows

RULES = ValidationRules()


def check(*rows, rules=RULES):
    return validate_rows(canonical_frame(list(rows)), rules)


def codes(errors, column=None):
    e = errors if column is None else errors[errors["column"] == column]
    return sorted(e["code"])


def test_a_valid_row_passes_and_gets_cents_and_canonical_json():
    checked, errors = check(row(1, amount="$1.5", public_title='{"RU": "Б", "EN": "A"}', without_message=""))
    assert errors.empty and list(errors.columns) == ERROR_COLUMNS
    r = checked.iloc[0]
    assert r["is_valid"] and r["amount_cents"] == 150 and not r["without_message"]
    assert checked["without_message"].dtype == bool
    assert r["public_title"] == json.dumps({"EN": "A", "RU": "Б"}, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    assert str(checked["amount_cents"].dtype) == "Int64"


def test_one_row_with_several_problems_reports_all_of_them():
    checked, errors = check(row(1, user_id="nope", amount="1.234", public_title='{"EN": bad', without_message="maybe"))
    assert set(zip(errors["column"], errors["code"])) == {
        ("user_id", "user_id_format"),
        ("amount", "amount_too_many_decimals"),
        ("public_title", "not_a_text_object"),
        ("without_message", "not_a_boolean"),
    }
    assert set(errors["source_row"]) == {2} and set(errors["source_file"]) == {"sheet.csv"}
    assert not checked["is_valid"][0]


def test_every_row_is_checked_and_valid_rows_stay_valid():
    checked, errors = check(row(1), row(2, amount=None), row(3), row(4, user_id=None))
    assert checked["is_valid"].tolist() == [True, False, True, False]
    assert list(zip(errors["source_row"], errors["column"], errors["code"])) == [
        (3, "amount", "required"),
        (5, "user_id", "required"),
    ]
    assert errors["message"].tolist() == ["amount is missing", "user id is missing"]


@pytest.mark.parametrize(
    "amount, code, message",
    [
        ("1.234", "amount_too_many_decimals", "amount 1.234 has more than 2 decimals"),
        ("0", "amount_too_small", "amount 0 is below the minimum of $0.01"),
        ("0.00", "amount_too_small", None),
        ("-5", "amount_too_small", None),
        ("150", "amount_too_large", "amount 150 is above the maximum of $100.00"),
        ("100.01", "amount_too_large", None),
        ("1,50", "amount_decimal_comma",
         "amount '1,50' uses a decimal comma: pass --decimal-comma if the sheet's locale writes 12,50 for 12.50"),
        ("abc", "amount_not_a_number", None),
        ("$", "amount_not_a_number", None),
        ("1e2", "amount_not_a_number", None),
        ("99999999999999999999", "amount_too_large", "amount 99999999999999999999 is above the maximum of $100.00"),
    ],
)
def test_bad_amounts(amount, code, message):
    checked, errors = check(row(1, amount=amount))
    assert codes(errors) == [code]
    if message:
        assert errors["message"][0] == message


@pytest.mark.parametrize("amount, cents", [("1", 100), ("1.5", 150), ("1.50", 150), ("$0.01", 1), ("100", 10000),
                                           ("1.500", 150), (".5", 50), ("007.10", 710)])
def test_good_amounts(amount, cents):
    checked, errors = check(row(1, amount=amount))
    assert errors.empty and checked["amount_cents"][0] == cents


def test_limits_come_from_the_rules():
    rules = ValidationRules(min_cents=50, max_cents=20000, max_decimals=1)
    _, errors = check(row(1, amount="0.4"), row(2, amount="150"), row(3, amount="1.25"), rules=rules)
    assert codes(errors) == ["amount_too_many_decimals", "amount_too_small"]


def test_a_cell_longer_than_max_cell_chars_is_a_row_error_in_a_column_without_its_own_limit():
    rules = ValidationRules(max_cell_chars=40)
    checked, errors = check(row(1, assignment_id="a" * 40), row(2, assignment_id="a" * 41), rules=rules)
    assert list(checked["is_valid"]) == [True, False]
    [message] = errors.loc[errors["column"] == "assignment_id", "message"]
    assert message == "assignment id is 41 characters long; the limit is 40"


# The properties below check a whole list of generated values per example, in one frame and one validation
# (one row per value): a validation costs the same for 1 row as for 60, so the suite's time goes into values, not
# into calls. Each row is then judged on its own, and a failure names the values it failed for.
BATCH = {"min_size": 10, "max_size": 60}
PROPERTY = settings(max_examples=20, deadline=None)


def check_cells(column, cells, rules=RULES):
    """One frame, one row per cell (row i has cells[i] in `column`, valid values elsewhere), one validation."""
    return check(*(row(i, **{column: cell}) for i, cell in enumerate(cells)), rules=rules)


def codes_per_row(errors, n):
    """Sorted error codes of each of the n rows of a `check_cells` frame (sheet rows 2 .. n + 1)."""
    by_row = errors.groupby("source_row")["code"].agg(sorted).to_dict()
    return [by_row.get(i + 2, []) for i in range(n)]


def misjudged(cells, got, expected):
    """(cell, got, expected) for every row whose result differs: the failure message."""
    return [(cell, g, e) for cell, g, e in zip(cells, got, expected) if g != e]


# how a sheet may write the same amount: "1.50", "1.5" (and "2" for 2.00), "1.500", "01.50"
WRITTEN = [str, lambda t: t.rstrip("0").rstrip("."), lambda t: t + "0", lambda t: "0" + t]


@PROPERTY
@given(st.lists(st.tuples(st.decimals(min_value=Decimal("0.01"), max_value=Decimal("100"), places=2), st.booleans(),
                          st.sampled_from(WRITTEN)), **BATCH))
def test_any_two_decimal_amount_in_range_is_valid_with_exact_cents(amounts):
    texts = [("$" if dollar else "") + form(f"{d:f}") for d, dollar, form in amounts]
    checked, errors = check_cells("amount", texts)
    assert errors.empty, errors[["source_row", "message"]].to_dict("records")
    expected = [int(d * 100) for d, _, _ in amounts]
    assert checked["amount_cents"].tolist() == expected, misjudged(texts, checked["amount_cents"].tolist(), expected)


@PROPERTY
@given(st.lists(st.decimals(min_value=Decimal("0.001"), max_value=Decimal("99.999"), places=3).filter(
    lambda d: d != d.quantize(Decimal("0.01"))), **BATCH))
def test_any_amount_with_a_third_decimal_is_invalid(amounts):
    texts = [str(d) for d in amounts]
    _, errors = check_cells("amount", texts)
    got = codes_per_row(errors, len(texts))
    assert not misjudged(texts, got, [["amount_too_many_decimals"]] * len(texts))


@PROPERTY
@given(st.lists(st.one_of(
    st.decimals(min_value=Decimal("100.01"), max_value=Decimal("1e9"), places=2),
    st.decimals(min_value=Decimal("-1e6"), max_value=Decimal("0.00"), places=2),
), **BATCH))
def test_any_amount_out_of_range_is_invalid(amounts):
    texts = [str(d) for d in amounts]
    _, errors = check_cells("amount", texts)
    expected = [["amount_too_large"] if d > 0 else ["amount_too_small"] for d in amounts]
    assert not misjudged(texts, codes_per_row(errors, len(texts)), expected)


HEX = "0123456789abcdef"


@PROPERTY
@given(st.lists(st.text(alphabet=HEX, min_size=32, max_size=32), **BATCH))
def test_any_32_lowercase_hex_user_id_is_valid(user_ids):
    checked, errors = check_cells("user_id", user_ids)
    assert errors.empty, errors[["source_row", "message"]].to_dict("records")
    assert checked["is_valid"].all()


def _is_user_id(s):
    return len(s.strip()) == 32 and set(s.strip()) <= set(HEX)


# near misses (a character short or too many, upper case, one foreign character), then any text
_NOT_A_USER_ID = st.one_of(
    st.text(alphabet=HEX, min_size=31, max_size=31),
    st.text(alphabet=HEX, min_size=33, max_size=33),
    st.text(alphabet=HEX.upper(), min_size=32, max_size=32),
    st.tuples(st.text(alphabet=HEX, min_size=31, max_size=31), st.characters(), st.integers(0, 31)).map(
        lambda t: t[0][:t[2]] + t[1] + t[0][t[2]:]),
    st.text(min_size=1, max_size=40),
).filter(lambda s: s.strip() and not _is_user_id(s))


@PROPERTY
@given(st.lists(_NOT_A_USER_ID, **BATCH))
def test_anything_else_as_user_id_is_invalid(user_ids):
    _, errors = check_cells("user_id", user_ids)
    got = codes_per_row(errors, len(user_ids))
    assert not misjudged(user_ids, got, [["user_id_format"]] * len(user_ids))


@pytest.mark.parametrize("text, expected", [("true", True), ("TRUE", True), ("1", True), ("yes", True),
                                            ("false", False), ("No", False), ("0", False), (None, False)])
def test_without_message_text(text, expected):
    kw = {"public_title": None, "public_message": None} if expected else {}
    checked, errors = check(row(1, without_message=text, **kw))
    assert errors.empty
    assert bool(checked["without_message"][0]) is expected


def test_without_message_that_is_not_a_boolean():
    checked, errors = check(row(1, without_message="maybe"))
    assert codes(errors) == ["not_a_boolean"] and bool(checked["without_message"][0]) is False


def test_without_message_true_forbids_title_and_message():
    _, errors = check(row(1, without_message="true"))
    assert set(zip(errors["column"], errors["code"])) == {
        ("public_title", "text_not_allowed"), ("public_message", "text_not_allowed")}


def test_without_message_false_needs_title_and_message_with_a_language():
    _, errors = check(row(1, public_title=None), row(2, public_message="{}"))
    assert list(zip(errors["source_row"], errors["column"], errors["code"])) == [
        (2, "public_title", "text_required"), (3, "public_message", "text_required")]


@pytest.mark.parametrize("cell", ['{"EN": bad', "[1, 2]", '"just text"', '{"EN": 5}', '{"EN": "  "}'])
def test_titles_must_be_json_objects_of_texts(cell):
    _, errors = check(row(1, public_title=cell))
    assert codes(errors) == ["not_a_text_object"]


@pytest.mark.parametrize("cell", ['{"en": "x"}', '{"ENG": "x"}', '{"XX": "x"}'])
def test_language_codes_must_be_allowed(cell):
    _, errors = check(row(1, public_message=cell))
    assert codes(errors, "public_message") == ["language_not_allowed"]


def test_text_lengths():
    rules = ValidationRules(max_title_len=5, max_message_len=10, max_comment_len=3)
    _, errors = check(row(1, public_title='{"EN": "123456"}', public_message='{"EN": "12345678901"}',
                          private_comment="abcd"), rules=rules)
    assert set(zip(errors["column"], errors["code"])) == {
        ("public_title", "text_too_long"), ("public_message", "text_too_long"), ("private_comment", "text_too_long")}
    assert "limit is 5" in errors.loc[errors["column"] == "public_title", "message"].iloc[0]


def test_repeated_bonus_key_is_reported_on_the_later_row():
    _, errors = check(row(1, bonus_key="k1"), row(2, bonus_key="k1"), row(3, bonus_key="k2"))
    assert list(zip(errors["source_row"], errors["code"])) == [(3, "bonus_key_repeated")]


def test_messages_are_plain_words_and_every_code_is_known():
    _, errors = check(row(1, user_id="X", amount="x", public_title="{", without_message="?", private_comment="y" * 2000))
    assert set(errors["code"]) <= {c.value for c in ErrorCode}
    assert all(m and "\n" not in m and "Check" not in m for m in errors["message"])


def test_empty_frame():
    checked, errors = validate_rows(canonical_frame([]), RULES)
    assert checked.empty and errors.empty


def test_input_index_is_kept_and_input_untouched():
    frame = canonical_frame([row(1), row(2, amount="1.5")])
    frame.index = [10, 20]
    before = frame.copy()
    checked, _ = validate_rows(frame, RULES)
    assert list(checked.index) == [10, 20]
    pd.testing.assert_frame_equal(frame, before)


def test_rules_refuse_sub_cent_decimals():
    with pytest.raises(ValueError):
        ValidationRules(max_decimals=3)


def test_a_frame_without_optional_columns_is_checked_as_if_they_were_empty():
    frame = canonical_frame([row(1, without_message="true", public_title=None, public_message=None)])
    frame = frame.drop(columns=["bonus_key", "assignment_id", "public_title", "public_message"])
    checked, errors = validate_rows(frame, RULES)
    assert errors.empty and checked["is_valid"].all()
    _, errors = validate_rows(frame.drop(columns=["amount"]), RULES)
    assert list(zip(errors["column"], errors["code"])) == [("amount", "required")]


# --- amounts as finance writes them (money.read_amount) -----------------------------------------------------

COMMA = ValidationRules(decimal_comma=True)


def test_a_decimal_comma_is_read_only_with_the_flag():
    texts = ["12,50", "1\u00a0099,50", "0,50", "1.234,50", "12.50", "$3,00"]
    checked, errors = check_cells("amount", texts, rules=COMMA)
    assert checked["amount_cents"].tolist() == [1250, 109950, 50, 123450, 1250, 300]
    assert codes_per_row(errors, len(texts)) == [[], ["amount_too_large"], [], ["amount_too_large"], [], []]
    assert "amount 1\u00a0099,50 (read as $1,099.50) is above the maximum of $100.00" in errors["message"].tolist()
    checked, errors = check_cells("amount", texts)  # without the flag: each comma one is refused, naming it
    assert codes_per_row(errors, len(texts)) == [["amount_decimal_comma"]] * 4 + [[], ["amount_decimal_comma"]]
    assert checked["amount_cents"].isna().tolist() == [True] * 4 + [False, True]
    assert errors["message"].iloc[0] == ("amount '12,50' uses a decimal comma: pass --decimal-comma if the sheet's "
                                         "locale writes 12,50 for 12.50")


def test_a_decimal_point_with_comma_thousands_under_the_flag_names_the_flag():
    _, errors = check(row(1, amount="1,234.50"), rules=COMMA)
    assert codes(errors) == ["amount_decimal_point"] and "run without --decimal-comma" in errors["message"][0]


def test_a_lone_thousands_separator_is_ambiguous_and_refused():
    _, errors = check(row(1, amount="1,234"), row(2, amount="1.234", user_id="x" * 32))
    assert codes(errors, "amount") == ["amount_ambiguous", "amount_too_many_decimals"]
    assert errors["message"].iloc[0] == ("amount '1,234' could be 1234 or 1.234: write 1234 or 1234.00 (a thousands "
                                         "separator alone is ambiguous)")
    _, errors = check(row(1, amount="1.234"), rules=COMMA)
    assert errors["message"].tolist() == ["amount '1.234' could be 1234 or 1,234: write 1234 or 1234,00 (a thousands "
                                          "separator alone is ambiguous)"]


def test_usd_signs_and_codes_are_accepted_other_currencies_refused_naming_them():
    texts = ["$12.50", "12.50 USD", "USD 12.50", "US$12.50", "€4.00", "4.00 EUR", "£4", "4 ₽", "RUB 4"]
    checked, errors = check_cells("amount", texts)
    assert checked["amount_cents"].tolist()[:4] == [1250] * 4
    assert codes_per_row(errors, len(texts)) == [[]] * 4 + [["amount_currency"]] * 5
    assert [m.split(" is in ")[1].split(",")[0] for m in errors["message"]] == [
        "'€'", "'EUR'", "'£'", "'₽'", "'RUB'"]
    assert errors["message"].iloc[0] == "amount '€4.00' is in '€', not USD: only USD amounts are paid (write it like " \
                                        "12.50 or $12.50)"


def test_an_uncalculated_formula_has_its_own_code():
    checked, errors = check(row(1, amount="=SUM(B2:B4)"))
    assert codes(errors) == ["formula_not_calculated"]
    assert errors["message"][0] == "amount '=SUM(B2:B4)': formula not calculated: open and save the file in Excel"
    assert checked["amount_cents"].isna().all()


def test_an_amount_beyond_the_cap_is_a_row_error_as_written_and_has_no_cents():
    checked, errors = check(row(1, amount="99999999999999999999"), row(2, amount="-99999999999999999999"),
                            row(3, amount="150"), row(4, amount="1.50"))
    assert list(zip(errors["source_row"], errors["code"], errors["message"])) == [
        (2, "amount_too_large", "amount 99999999999999999999 is above the maximum of $100.00"),
        (3, "amount_too_small", "amount -99999999999999999999 is below the minimum of $0.01"),
        (4, "amount_too_large", "amount 150 is above the maximum of $100.00"),
    ]
    # an amount read exactly keeps its cents even when refused (150.00); one beyond the cap has none
    assert checked["amount_cents"].tolist() == [pd.NA, pd.NA, 15000, 150]
