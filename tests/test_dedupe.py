from __future__ import annotations

import pandas as pd
import pytest
from sheet_factory import canonical_frame, keyed_rows, row

from pipeline.dedupe import conflict_key, find_duplicates, split_already_paid
from pipeline.keys import assign_row_keys
from pipeline.validate import ValidationRules, validate_rows


def test_conflict_key_is_toloka_409_identity():
    frame = keyed_rows([
        row(1), row(1, assignment_id="other-assignment"), row(1, amount="1.5"),
        row(1, amount="2"), row(2), row(1, private_comment="x"),
    ], all_valid=True)
    k = conflict_key(frame).tolist()
    assert k[0] == k[1] == k[2]
    assert len({k[0], k[3], k[4], k[5]}) == 4


def test_keep_first_reports_later_repeats_pointing_at_the_kept_row():
    frame = keyed_rows([row(1), row(2), row(1, assignment_id="a2"), row(1, amount="1.500"), row(3)], all_valid=True)
    unique, dups = find_duplicates(frame)
    assert unique["source_row"].tolist() == [2, 3, 6]
    assert dups["source_row"].tolist() == [4, 5]
    assert dups["duplicate_of"].tolist() == ["sheet.csv:2", "sheet.csv:2"]


def test_reject_all_pays_none_of_a_conflict_group():
    frame = keyed_rows([row(1), row(2), row(1, assignment_id="a2"), row(1, assignment_id="a3"), row(3)], all_valid=True)
    unique, dups = find_duplicates(frame, "reject-all")
    assert unique["source_row"].tolist() == [3, 6]
    assert dups["source_row"].tolist() == [2, 4, 5]
    # the first points at the second (never at itself); the others at the first
    assert dups["duplicate_of"].tolist() == ["sheet.csv:4", "sheet.csv:2", "sheet.csv:2"]


def test_duplicates_are_found_across_sheets_of_a_batch():
    a = canonical_frame([row(1)], source_file="a.csv")
    b = canonical_frame([row(1, assignment_id="zz")], source_file="b.csv")
    checked, _ = validate_rows(pd.concat([a, b], ignore_index=True), ValidationRules())
    unique, dups = find_duplicates(assign_row_keys(checked, "b"))
    assert dups["duplicate_of"].tolist() == ["a.csv:2"] and unique["source_file"].tolist() == ["a.csv"]


def test_no_duplicates_and_empty_input():
    frame = keyed_rows([row(1), row(2)], all_valid=True)
    unique, dups = find_duplicates(frame)
    assert len(unique) == 2 and dups.empty and "duplicate_of" in dups.columns
    unique, dups = find_duplicates(frame.iloc[:0])
    assert unique.empty and dups.empty


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="policy"):
        find_duplicates(keyed_rows([row(1)], all_valid=True), "keep-last")


def test_split_already_paid_names_the_run_and_bonus():
    frame = keyed_rows([row(1), row(2), row(3)], all_valid=True)
    keys = frame["row_key"].tolist()
    paid = pd.DataFrame({"row_key": [keys[1], "unrelated"], "run_id": ["run-7", "run-1"], "bonus_id": ["b-42", "b-1"]})
    to_pay, already = split_already_paid(frame, paid)
    assert to_pay["row_key"].tolist() == [keys[0], keys[2]]
    assert already[["row_key", "run_id", "bonus_id"]].values.tolist() == [[keys[1], "run-7", "b-42"]]


def test_split_already_paid_with_an_empty_ledger():
    frame = keyed_rows([row(1)], all_valid=True)
    empty = pd.DataFrame({"row_key": [], "run_id": [], "bonus_id": []})
    to_pay, already = split_already_paid(frame, empty)
    assert len(to_pay) == 1 and already.empty and {"run_id", "bonus_id"} <= set(already.columns)
