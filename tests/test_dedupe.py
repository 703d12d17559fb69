from __future__ import annotations

import pandas as pd
import pytest
from sheet_factory import canonical_frame, keyed_rows, row

from pipeline.dedupe import (
    conflict_key,
    find_duplicates,
    hold_lookalikes,
    match_ledger,
    near_duplicate_key,
    normalise_json_text,
    normalise_text,
)
from pipeline.keys import assign_row_keys, lookalike_keys
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


@pytest.mark.parametrize(("text", "normal"), [
    ("  Bonus\u00a0 week\t48 ", "Bonus week 48"),
    ("a\u202fb\u2007c", "a b c"),
    ("line one\r\nline two", "line one line two"),
    ("zero\u200bwidth\ufeff", "zerowidth"),
    ("Case Stays", "Case Stays"),
])
def test_normalise_text_collapses_every_unicode_space_and_drops_invisible_ones(text: str, normal: str):
    assert normalise_text(text) == normal


@pytest.mark.parametrize(("text", "normal"), [
    ('{"RU": " Спасибо\u00a0", "EN": "Thanks "}', '{"EN":"Thanks","RU":"Спасибо"}'),
    ('{ "EN" :  "Two  words" }', '{"EN":"Two words"}'),
    ('{"EN": "Tab\\tinside"}', '{"EN":"Tab inside"}'),  # a JSON escape is whitespace too
    ('{"EN": "THANKS"}', '{"EN":"THANKS"}'),  # a title's case is what the worker reads: kept
    ("not json  at all ", "not json at all"),
])
def test_normalise_json_text_normalises_strings_inside_and_sorts_keys(text: str, normal: str):
    assert normalise_json_text(text) == normal


def test_near_duplicates_are_flagged_pointing_at_the_first_row_and_marked_near():
    frame = keyed_rows([
        row(1, private_comment="Week 48"), row(1, private_comment="week\u00a048 "), row(1, amount="2"),
        row(1, private_comment="Week 48", public_title='{"EN": "Great  work"}'), row(2, private_comment="WEEK 48"),
        row(1, private_comment="Week 48", assignment_id="copy"),
    ], all_valid=True)
    unique, dups = find_duplicates(frame)
    assert unique["source_row"].tolist() == [2, 4, 6]
    assert dups["source_row"].tolist() == [3, 5, 7]
    assert dups["duplicate_of"].tolist() == ["sheet.csv:2"] * 3
    assert dups["near_duplicate"].tolist() == [True, True, False]  # the last differs only in its assignment
    assert unique["conflict_key"].is_unique


def test_reject_all_refuses_near_groups_whole():
    frame = keyed_rows([row(1, private_comment="A"), row(2), row(1, private_comment=" a")], all_valid=True)
    unique, dups = find_duplicates(frame, "reject-all")
    assert unique["source_row"].tolist() == [3]
    assert dups["duplicate_of"].tolist() == ["sheet.csv:4", "sheet.csv:2"] and dups["near_duplicate"].all()


def test_the_near_key_is_coarser_than_the_409_identity_and_never_merges_other_bonuses():
    rows = [row(1), row(1, private_comment="WEEK 1"), row(1, amount="1.51"), row(2), row(1, private_comment=None),
            row(1, public_message='{"EN": "Thank you! "}'), row(1, public_message='{"EN": "thank you!"}')]
    frame = keyed_rows(rows, all_valid=True)
    near = near_duplicate_key(frame).tolist()
    exact = conflict_key(frame).tolist()
    assert near == [0, 0, 1, 2, 3, 0, 4]
    for i in range(len(rows)):  # rows equal under Toloka's rule always share the near key
        assert all(near[i] == near[j] for j in range(len(rows)) if exact[i] == exact[j])


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="policy"):
        find_duplicates(keyed_rows([row(1)], all_valid=True), "keep-last")


KNOWN = ["row_key", "status", "attempt", "operation_id", "bonus_id", "paid_run_id", "errors", "retryable", "batch_id",
         "user_id", "amount_cents", "lookalike", "paid_at"]


def ledger_rows(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame([{c: r.get(c) for c in KNOWN} for r in rows], columns=KNOWN)


def match(frame: pd.DataFrame, *known: dict, by_content: pd.DataFrame | None = None):
    unique, _ = find_duplicates(frame)
    empty = pd.DataFrame(columns=["row_key", "content_key", "status", "bonus_id", "paid_run_id", "operation_id"])
    return match_ledger(unique, ledger_rows(*known), empty if by_content is None else by_content, lookalike_keys)


def test_match_ledger_splits_rows_by_what_the_ledger_knows():
    frame = keyed_rows([row(i) for i in range(7)], all_valid=True)
    k = frame["row_key"].tolist()
    m = match(frame,
              {"row_key": k[1], "status": "paid", "bonus_id": "b-42", "paid_run_id": "run-7", "attempt": 1},
              {"row_key": k[2], "status": "planned", "attempt": 1},
              {"row_key": k[3], "status": "unknown", "attempt": 1},
              {"row_key": k[4], "status": "failed", "attempt": 2, "retryable": 1},
              {"row_key": k[5], "status": "failed", "attempt": 1, "retryable": 0},
              {"row_key": k[6], "status": "superseded", "attempt": 3, "retryable": 0},
              {"row_key": "unrelated", "status": "paid"})
    assert m.already_paid[["row_key", "run_id", "bonus_id"]].values.tolist() == [[k[1], "run-7", "b-42"]]
    assert m.in_flight["row_key"].tolist() == [k[2]] and m.unknown["row_key"].tolist() == [k[3]]
    assert m.refused["row_key"].tolist() == [k[5]]  # a validation refusal is not resent
    assert dict(zip(m.to_plan["row_key"], m.to_plan["attempt"])) == {k[0]: 1, k[4]: 3, k[6]: 4}
    assert m.reused.empty


def test_match_ledger_with_an_empty_ledger_plans_every_row_as_attempt_1():
    frame = keyed_rows([row(1), row(2)], all_valid=True)
    m = match(frame)
    assert m.to_plan["attempt"].tolist() == [1, 1] and m.already_paid.empty and m.in_flight.empty


def test_a_bonus_key_that_paid_other_content_is_reused_not_already_paid():
    before = keyed_rows([row(1, amount="8.00", bonus_key="1")], all_valid=True)
    now = keyed_rows([row(2, amount="7.00", bonus_key="1")], all_valid=True)
    assert before["row_key"][0] == now["row_key"][0]
    paid = {"row_key": now["row_key"][0], "status": "paid", "bonus_id": "b-1", "paid_run_id": "r-1",
            "user_id": before["user_id"][0], "amount_cents": 800, "lookalike": lookalike_keys(before)[0]}
    m = match(now, paid)
    assert m.already_paid.empty and m.to_plan.empty
    [message] = m.reused["message"].tolist()
    assert "bonus_key '1'" in message and before["user_id"][0] in message and "8.00" in message and "b-1" in message
    same = match(before, paid)  # the same content under the same key: already paid
    assert same.reused.empty and len(same.already_paid) == 1


def test_a_row_that_gained_a_bonus_key_adopts_the_ledger_identity_of_its_payment():
    plain = keyed_rows([row(1)], all_valid=True)
    keyed = keyed_rows([row(1, bonus_key="PAY-1")], all_valid=True)
    by_content = pd.DataFrame({"row_key": [plain["row_key"][0]], "content_key": [plain["content_key"][0]],
                               "status": ["paid"], "bonus_id": ["b-9"], "paid_run_id": ["r-1"], "operation_id": ["op"]})
    m = match(keyed, by_content=by_content)
    assert m.already_paid["row_key"].tolist() == plain["row_key"].tolist() and m.to_plan.empty
    adopted = m.adopt_keys(keyed)
    assert adopted["row_key"].tolist() == plain["row_key"].tolist()


def test_look_alikes_of_recent_payments_of_other_batches_are_held():
    frame = keyed_rows([row(1), row(2)], all_valid=True)
    to_plan = frame.assign(lookalike=lookalike_keys(frame))
    recent = pd.DataFrame({"lookalike": [to_plan["lookalike"][0]], "batch_id": ["w48"], "paid_run_id": ["r-1"],
                           "run_id": ["r-1"], "bonus_id": ["b-1"], "status": ["paid"], "paid_at": ["2026-11-29"],
                           "updated": ["2026-11-29"]})
    rest, held = hold_lookalikes(to_plan, recent)
    assert rest["user_id"].tolist() == [frame["user_id"][1]]
    assert "w48" in held["note"][0] and "--allow-repeats" in held["note"][0]
