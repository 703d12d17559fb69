"""Mapping an operation log back to rows: the one place a row's fate is decided."""

from __future__ import annotations

from pipeline.execute import map_log


def persist(key: str, bonus_id: str) -> dict:
    return {"type": "USER_BONUS_PERSIST", "success": True, "input": {"__item_idx": key},
            "output": {"user_bonus_id": bonus_id}}


def rejected(key: str, code: str) -> dict:
    return {"type": "USER_BONUS_VALIDATE", "success": False, "input": {"__item_idx": key},
            "output": {"user_id": {"code": code, "message": "Entity does not exist"}}}


def test_log_entries_map_to_rows_by_item_idx_not_position() -> None:
    results = map_log(["a", "b"], "SUCCESS", [rejected("b", "ENTITY_DOES_NOT_EXIST"), persist("a", "7")])
    assert [(r.row_key, r.status, r.bonus_id) for r in results] == [("a", "paid", "7"), ("b", "failed", None)]
    assert results[1].errors == [{"column": "user_id", "code": "ENTITY_DOES_NOT_EXIST",
                                  "message": "Entity does not exist"}]
    assert results[1].retryable is False


def test_rows_missing_from_a_successful_log_are_unknown_never_failed() -> None:
    [r] = map_log(["a"], "SUCCESS", [])
    assert r.status == "unknown"


def test_rows_missing_from_a_failed_operation_log_are_failed_and_retryable() -> None:
    [r] = map_log(["a"], "FAIL", [persist("zzz", "1")])
    assert (r.status, r.retryable) == ("failed", True)


def test_unreadable_log_makes_every_row_unknown() -> None:
    assert {r.status for r in map_log(["a", "b"], "FAIL", None)} == {"unknown"}


def test_a_persist_entry_wins_over_an_earlier_failure_for_the_same_row() -> None:
    [r] = map_log(["a"], "SUCCESS", [rejected("a", "INTERNAL_ERROR"), persist("a", "9")])
    assert (r.status, r.bonus_id) == ("paid", "9")


def test_an_item_not_issued_because_its_operation_failed_is_retryable() -> None:
    entry = {"type": "USER_BONUS_PERSIST", "success": False, "input": {"__item_idx": "a"},
             "output": {"code": "OPERATION_EXECUTION_ERROR", "message": "Not issued"}}
    [r] = map_log(["a"], "FAIL", [entry])
    assert (r.status, r.retryable, r.errors[0]["code"]) == ("failed", True, "OPERATION_EXECUTION_ERROR")
