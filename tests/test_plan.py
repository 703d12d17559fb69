from __future__ import annotations

import uuid

import pytest

from pipeline.dedupe import conflict_key
from pipeline.keys import assign_row_keys
from pipeline.plan import NAMESPACE, operation_id_for, plan_chunks
from pipeline.validate import ValidationRules, validate_rows
from sheet_factory import canonical_frame, row


def to_pay(rows):
    checked, _ = validate_rows(canonical_frame(rows), ValidationRules())
    return assign_row_keys(checked, "b")


def test_chunks_are_contiguous_in_sheet_order():
    plan = plan_chunks(to_pay([row(i) for i in range(7)]), "b", 3)
    assert plan["source_row"].tolist() == list(range(2, 9))
    assert plan["chunk_no"].tolist() == [1, 1, 1, 2, 2, 2, 3]
    assert plan.groupby("chunk_no")["operation_id"].nunique().eq(1).all()
    assert plan["operation_id"].nunique() == 3


def test_operation_id_is_the_documented_uuid5():
    frame = to_pay([row(1), row(2)])
    keys = frame["row_key"].tolist()
    expected = str(uuid.uuid5(NAMESPACE, "b\n1\n" + "\n".join(sorted(keys))))
    assert plan_chunks(frame, "b", 10)["operation_id"].tolist() == [expected, expected]
    assert operation_id_for("b", reversed(keys), 1) == expected


def test_operation_ids_are_deterministic_and_change_with_attempt_and_batch():
    frame = to_pay([row(1), row(2)])
    a = plan_chunks(frame, "b", 10)["operation_id"][0]
    assert plan_chunks(frame, "b", 10)["operation_id"][0] == a
    assert plan_chunks(frame, "b", 10, attempt=2)["operation_id"][0] != a
    assert plan_chunks(frame, "other", 10)["operation_id"][0] != a
    assert str(uuid.UUID(a)) == a


def test_conflicting_rows_never_share_a_chunk():
    frame = to_pay([row(1), row(2), row(1, assignment_id="x"), row(3), row(1, assignment_id="y")])
    plan = plan_chunks(frame, "b", 10)
    per_chunk = plan.assign(k=conflict_key(plan).to_numpy()).groupby("chunk_no")["k"]
    assert (per_chunk.nunique() == per_chunk.size()).all()
    assert sorted(plan["source_row"]) == [2, 3, 4, 5, 6]
    assert plan["chunk_no"].tolist() == [1, 1, 1, 2, 3]


def test_empty_and_bad_chunk_size():
    plan = plan_chunks(to_pay([]), "b", 10)
    assert plan.empty and {"chunk_no", "operation_id"} <= set(plan.columns)
    with pytest.raises(ValueError):
        plan_chunks(to_pay([row(1)]), "b", 0)
