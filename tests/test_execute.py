"""Mapping an operation log back to rows: the one place a row's fate is decided.

A row is paid only when its entry carries a bonus id and echoes the user and amount we sent; refused only on
an explicit failure entry; anything else is `unknown` (never resent, settled by asking the server).
"""

from __future__ import annotations

import orjson
import pytest

from pipeline.execute import map_log
from pipeline.toloka import LogEntry, _decode_log

USER = "a" * 32


def sent(*keys: str, amount: str = "1.50") -> list[tuple[str, bytes]]:
    return [(k, b'{"user_id":"' + USER.encode() + b'","amount":' + amount.encode() + b"}") for k in keys]


def echo(key: str, **overrides: object) -> dict:
    return {"__item_idx": key, "user_id": USER, "amount": 1.5, **overrides}


def persist(key: str, bonus_id: str | None, **overrides: object) -> dict:
    output = {"user_bonus_id": bonus_id} if bonus_id is not None else {}
    return {"type": "USER_BONUS_PERSIST", "success": True, "input": echo(key, **overrides), "output": output}


def rejected(key: str, code: str) -> dict:
    return {"type": "USER_BONUS_VALIDATE", "success": False, "input": echo(key),
            "output": {"user_id": {"code": code, "message": "Entity does not exist"}}}


def test_log_entries_map_to_rows_by_item_idx_not_position() -> None:
    results = map_log(sent("a", "b"), "SUCCESS", [rejected("b", "ENTITY_DOES_NOT_EXIST"), persist("a", "7")])
    assert [(r.row_key, r.status, r.bonus_id) for r in results] == [("a", "paid", "7"), ("b", "failed", None)]
    assert results[1].errors == [{"column": "user_id", "code": "ENTITY_DOES_NOT_EXIST",
                                  "message": "Entity does not exist"}]
    assert results[1].retryable is False


def test_rows_missing_from_a_successful_log_are_unknown_never_failed() -> None:
    [r] = map_log(sent("a"), "SUCCESS", [])
    assert r.status == "unknown" and r.errors[0]["code"] == "NOT_IN_LOG"


def test_a_failed_operation_with_an_empty_log_is_unknown_not_failed() -> None:
    """Issue 8: FAIL with an empty log was recorded `failed`, and the next run paid the rows again."""
    results = map_log(sent("a", "b"), "FAIL", [])
    assert {r.status for r in results} == {"unknown"}
    [r] = map_log(sent("a"), "FAIL", [persist("zzz", "1")])
    assert r.status == "unknown"


def test_success_without_a_bonus_id_is_unknown() -> None:
    [r] = map_log(sent("a"), "SUCCESS", [persist("a", None)])
    assert (r.status, r.errors[0]["code"]) == ("unknown", "NO_BONUS_ID")


def test_a_log_entry_for_another_user_or_amount_is_unknown_never_paid() -> None:
    """Issue 8: a 409 and an old log were accepted as paid without comparing user and amount."""
    [r] = map_log(sent("a"), "SUCCESS", [persist("a", "9", user_id="b" * 32)])
    assert (r.status, r.errors[0]["code"]) == ("unknown", "LOG_MISMATCH")
    [r] = map_log(sent("a"), "SUCCESS", [persist("a", "9", amount=7.0)])
    assert (r.status, r.errors[0]["code"]) == ("unknown", "LOG_MISMATCH")
    [r] = map_log(sent("a", amount="1.5"), "SUCCESS", [persist("a", "9", amount=1.50)])
    assert r.status == "paid"  # 1.5 and 1.50 are the same amount


def test_unreadable_log_makes_every_row_unknown() -> None:
    assert {r.status for r in map_log(sent("a", "b"), "FAIL", None)} == {"unknown"}


def test_garbage_entries_are_ignored_not_a_traceback() -> None:
    [r] = map_log(sent("a"), "SUCCESS", ["x", {"input": []}, {"input": echo("a"), "success": "maybe"}])
    assert r.status == "unknown"


def test_a_persist_entry_wins_over_an_earlier_failure_for_the_same_row() -> None:
    [r] = map_log(sent("a"), "SUCCESS", [rejected("a", "INTERNAL_ERROR"), persist("a", "9")])
    assert (r.status, r.bonus_id) == ("paid", "9")


def test_an_item_not_issued_because_its_operation_failed_is_retryable() -> None:
    entry = {"type": "USER_BONUS_PERSIST", "success": False, "input": echo("a"),
             "output": {"code": "OPERATION_EXECUTION_ERROR", "message": "Not issued"}}
    [r] = map_log(sent("a"), "FAIL", [entry])
    assert (r.status, r.retryable, r.errors[0]["code"]) == ("failed", True, "OPERATION_EXECUTION_ERROR")


def test_items_are_compared_as_sent() -> None:
    item = orjson.dumps({"user_id": USER, "amount": orjson.Fragment(b"0.07")})
    [r] = map_log([("a", item)], "SUCCESS", [persist("a", "1", amount=0.07)])
    assert r.status == "paid"


# -- the fast paths: logs decoded as LogEntry structs, rows checked against the (user, cents) they were built from

LOGS = [
    [persist("a", "7"), rejected("b", "ENTITY_DOES_NOT_EXIST")],
    [persist("a", "9", user_id="b" * 32), persist("b", "8", amount=7.0), persist("c", None)],
    [rejected("a", "INTERNAL_ERROR"), persist("a", "9"), {"input": echo("b"), "success": "maybe"}],
    [persist("a", "1", amount=1), persist("b", "2", amount="1.50"), persist("c", "3", amount=True)],
    [{"input": {"__item_idx": 5}}, {"success": True}, {"input": None}, persist("zzz", "4"), {}],
    [{"type": "USER_BONUS_PERSIST", "success": False, "input": echo("a"), "output": "not an object"}],
    [],
]


@pytest.mark.parametrize("entries", LOGS)
def test_a_log_decoded_as_structs_maps_exactly_as_its_json(entries: list) -> None:
    decoded = _decode_log(orjson.dumps(entries))
    assert all(isinstance(e, LogEntry) for e in decoded)
    rows = sent("a", "b", "c")
    pays = {k: (USER, 150) for k in ("a", "b", "c")}
    expected = map_log(rows, "SUCCESS", entries)
    assert map_log(rows, "SUCCESS", decoded) == expected
    assert map_log(rows, "SUCCESS", entries, pays) == expected
    assert map_log(rows, "SUCCESS", decoded, pays) == expected


@pytest.mark.parametrize("entries", [["x", {"input": []}], [None], {"items": []}, [{"input": "a"}]])
def test_a_log_of_another_shape_is_decoded_as_plain_json(entries: object) -> None:
    assert _decode_log(orjson.dumps(entries)) == entries


@pytest.mark.parametrize(("amount", "status"), [(0.07, "paid"), (7, "unknown"), (0.0700001, "unknown"),
                                                 ("0.07", "paid"), (False, "unknown"), (None, "unknown")])
def test_amounts_are_compared_exactly_with_the_cents_an_item_was_built_from(amount: object, status: str) -> None:
    item = orjson.dumps({"user_id": USER, "amount": orjson.Fragment(b"0.07")})
    entries = [persist("a", "1", amount=amount)]
    [fast] = map_log([("a", item)], "SUCCESS", _decode_log(orjson.dumps(entries)), {"a": (USER, 7)})
    [slow] = map_log([("a", item)], "SUCCESS", entries)
    assert fast == slow and fast.status == status
