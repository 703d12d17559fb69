"""Async operations over real HTTP: lifecycle, details, the per-item log, and the FAIL rule."""
from __future__ import annotations

import uuid

from sandbox_fixtures import api_session, bonus, operation, set_faults, wait_operation
from waiting import wait_for

BONUSES = "/api/v1/user-bonuses"
ASYNC = {"async_mode": "true", "skip_invalid_items": "true"}


def test_async_post_returns_pending_operation_that_succeeds(sandbox):
    session = api_session()
    op_id = str(uuid.uuid4())
    response = session.post(sandbox.url + BONUSES, params={**ASYNC, "operation_id": op_id}, json=[bonus(1), bonus(2)])
    assert response.status_code == 201
    submitted = response.json()
    assert submitted["id"] == op_id and submitted["type"] == "USER_BONUS.BATCH_CREATE"
    assert submitted["status"] == "PENDING" and submitted["progress"] == 0
    assert submitted["parameters"] == {"skip_invalid_items": True}
    done = wait_operation(session, sandbox.url, op_id)
    assert done["status"] == "SUCCESS" and done["progress"] == 100 and done["started"] and done["finished"]
    assert done["details"] == {"total_count": 2, "valid_count": 2, "not_valid_count": 0,
                               "success_count": 2, "failed_count": 0}


def test_slow_operation_is_visibly_running(sandbox):
    session = api_session()
    set_faults(sandbox.url, "slow_op_ms=300")
    op = session.post(sandbox.url + BONUSES, params=ASYNC, json=[bonus(1)]).json()
    seen = [op["status"]]

    def finished() -> bool:
        seen.append(operation(session, sandbox.url, op["id"])["status"])
        return seen[-1] in ("SUCCESS", "FAIL")

    wait_for(finished, "the slow operation to finish", timeout=30)
    lifecycle = ["PENDING", "RUNNING", "SUCCESS"]
    assert "RUNNING" in seen and seen[-1] == "SUCCESS"
    assert seen == sorted(seen, key=lifecycle.index), seen  # never back to an earlier state


def test_log_echoes_input_with_unknown_keys_and_names_bonus_ids(sandbox):
    session = api_session()
    items = [bonus(1, __item_idx="0"), bonus(2, amount=500, __item_idx="1"), bonus(3, __item_idx="2")]
    op = session.post(sandbox.url + BONUSES, params=ASYNC, json=items).json()
    done = wait_operation(session, sandbox.url, op["id"])
    assert done["details"] == {"total_count": 3, "valid_count": 2, "not_valid_count": 1,
                               "success_count": 2, "failed_count": 1}
    log = session.get(f"{sandbox.url}/api/v1/operations/{op['id']}/log").json()
    assert [entry["input"] for entry in log] == items
    assert [(entry["type"], entry["success"]) for entry in log] == [
        ("USER_BONUS_PERSIST", True), ("USER_BONUS_VALIDATE", False), ("USER_BONUS_PERSIST", True)]
    assert log[1]["output"]["amount"]["code"] == "VALUE_GREATER_THAN_MAX"
    paid = session.get(f"{sandbox.url}{BONUSES}/{log[2]['output']['user_bonus_id']}").json()
    assert paid["user_id"] == items[2]["user_id"]


def test_invalid_item_without_skip_fails_the_operation_and_pays_none(sandbox):
    session = api_session()
    op = session.post(sandbox.url + BONUSES, params={"async_mode": "true"}, json=[bonus(1), bonus(2, amount=0)]).json()
    done = wait_operation(session, sandbox.url, op["id"])
    assert done["status"] == "FAIL"
    assert done["details"] == {"total_count": 2, "valid_count": 1, "not_valid_count": 1,
                               "success_count": 0, "failed_count": 2}
    log = session.get(f"{sandbox.url}/api/v1/operations/{op['id']}/log").json()
    assert [entry["success"] for entry in log] == [False, False]
    assert log[0]["output"]["code"] == "VALIDATION_ERROR" and log[1]["output"]["amount"]["code"] == "VALUE_LESS_THAN_MIN"
    assert session.get(sandbox.url + BONUSES).json()["items"] == []


def test_op_fail_fault_pays_none_and_log_says_why(sandbox):
    session = api_session()
    set_faults(sandbox.url, "op_fail=1")
    op = session.post(sandbox.url + BONUSES, params=ASYNC, json=[bonus(1), bonus(2)]).json()
    done = wait_operation(session, sandbox.url, op["id"])
    assert done["status"] == "FAIL" and done["details"]["success_count"] == 0 and done["details"]["failed_count"] == 2
    log = session.get(f"{sandbox.url}/api/v1/operations/{op['id']}/log").json()
    assert {entry["output"]["code"] for entry in log} == {"OPERATION_EXECUTION_ERROR"}
    assert session.get(sandbox.url + BONUSES).json()["items"] == []


def test_single_object_async_is_an_operation_of_one(sandbox):
    session = api_session()
    op = session.post(sandbox.url + BONUSES, params=ASYNC, json=bonus(1, __item_idx="0")).json()
    assert wait_operation(session, sandbox.url, op["id"])["details"]["success_count"] == 1
    log = session.get(f"{sandbox.url}/api/v1/operations/{op['id']}/log").json()
    assert log[0]["input"]["__item_idx"] == "0"


def test_unknown_operation_is_404(sandbox):
    session = api_session()
    for path in ("/api/v1/operations/nope", "/api/v1/operations/nope/log"):
        response = session.get(sandbox.url + path)
        assert response.status_code == 404 and response.json()["code"] == "DOES_NOT_EXIST"
