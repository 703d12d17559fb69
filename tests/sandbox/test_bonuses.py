"""POST/GET /api/v1/user-bonuses over real HTTP: sync and async creation, validation, conflicts, listing."""
from __future__ import annotations

import uuid

from sandbox_fixtures import api_session, bonus, user_id, wait_operation

BONUSES = "/api/v1/user-bonuses"


def test_sync_single_bonus_returns_the_created_bonus(sandbox):
    response = api_session().post(sandbox.url + BONUSES, json=bonus(1, 0.5, private_comment="c", assignment_id="a1"))
    assert response.status_code == 201
    created = response.json()
    assert created["id"] == "100000000001" and created["amount"] == 0.5 and created["private_comment"] == "c"
    assert created["assignment_id"] == "a1" and len(created["created"]) == 23


def test_sync_batch_keys_items_by_index_and_skips_invalid(sandbox):
    items = [bonus(1), bonus(2, amount=0.001), bonus(3)]
    response = api_session().post(sandbox.url + BONUSES, params={"skip_invalid_items": "true"}, json=items)
    assert response.status_code == 201
    body = response.json()
    assert sorted(body["items"]) == ["0", "2"]
    assert body["validation_errors"] == {"1": {"amount": {"code": "VALUE_LESS_THAN_MIN",
                                                          "message": "Value must be greater or equal to 0.005",
                                                          "params": [0.005]}}}


def test_sync_all_valid_batch_has_no_validation_errors_key(sandbox):
    body = api_session().post(sandbox.url + BONUSES, json=[bonus(1), bonus(2)]).json()
    assert set(body) == {"items"}


def test_invalid_item_without_skip_creates_nothing_and_names_every_bad_field(sandbox):
    session = api_session()
    items = [bonus(1), {"amount": 200}, bonus(3, public_title={"XX": "hi"}), bonus(4, without_message=True)]
    response = session.post(sandbox.url + BONUSES, json=items)
    assert response.status_code == 400
    error = response.json()
    assert error["code"] == "VALIDATION_ERROR" and "request_id" in error
    payload = error["payload"]
    assert set(payload) == {"1", "2", "3"}
    assert payload["1"]["user_id"]["code"] == "VALUE_REQUIRED"
    assert payload["1"]["amount"]["code"] == "VALUE_GREATER_THAN_MAX"
    assert payload["1"]["public_title"]["code"] == "VALUE_REQUIRED"
    assert payload["2"]["public_title.XX"]["code"] == "VALUE_NOT_ALLOWED"
    assert payload["3"]["public_title"]["code"] == "VALUE_NOT_ALLOWED"
    assert session.get(sandbox.url + BONUSES).json() == {"items": [], "has_more": False}


def test_single_invalid_object_reports_fields_directly(sandbox):
    response = api_session().post(sandbox.url + BONUSES, json=bonus(1, amount="1.5"))
    assert response.status_code == 400
    assert response.json()["payload"] == {"amount": {"code": "FLOAT_EXPECTED", "message": "Number expected"}}


def test_without_message_bonus_needs_no_title(sandbox):
    item = {"user_id": user_id(5), "amount": 2, "without_message": True}
    assert api_session().post(sandbox.url + BONUSES, json=item).status_code == 201


def test_unknown_user_does_not_exist(tmp_path):
    from pipeline.sandbox import SandboxServer
    with SandboxServer(tmp_path / "db", token="sandbox-test-token", unknown_users={user_id(9)}) as srv:
        response = api_session().post(srv.url + BONUSES, json=[bonus(9), {**bonus(1), "user_id": "Not-Hex"}])
    payload = response.json()["payload"]
    assert payload["0"]["user_id"]["code"] == payload["1"]["user_id"]["code"] == "ENTITY_DOES_NOT_EXIST"


def test_identical_bonuses_in_one_request_conflict(sandbox):
    session = api_session()
    for params in ({}, {"async_mode": "true"}):
        response = session.post(sandbox.url + BONUSES, params=params, json=[bonus(1), bonus(2), bonus(1, amount=1.50)])
        assert response.status_code == 409
        error = response.json()
        assert error["code"] == "ENTITY_CONFLICT" and error["payload"]["user_id"]["code"] == "ENTITY_CONFLICT"
        assert error["payload"]["indexes"] == [2]
    assert session.get(sandbox.url + BONUSES).json()["items"] == []
    assert session.post(sandbox.url + BONUSES, json=[bonus(1), bonus(1, private_comment="2nd")]).status_code == 201


def test_too_many_items_is_413(tmp_path):
    from pipeline.sandbox import SandboxServer
    with SandboxServer(tmp_path / "db", token="sandbox-test-token", max_async_items=5) as srv:
        session = api_session()
        sync = session.post(srv.url + BONUSES, json=[bonus(i) for i in range(101)])
        too_big = session.post(srv.url + BONUSES, params={"async_mode": "true"}, json=[bonus(i) for i in range(6)])
        fits = session.post(srv.url + BONUSES, params={"async_mode": "true"}, json=[bonus(i) for i in range(5)])
    assert sync.status_code == too_big.status_code == 413
    assert fits.status_code == 201


def test_repeated_operation_id_never_pays_twice(sandbox):
    session = api_session()
    op_id = str(uuid.uuid4())
    for params in ({"async_mode": "true", "operation_id": op_id}, {"operation_id": str(uuid.uuid4())}):
        first = session.post(sandbox.url + BONUSES, params=params, json=[bonus(1), bonus(2)])
        again = session.post(sandbox.url + BONUSES, params=params, json=[bonus(1), bonus(2)])
        assert first.status_code == 201
        assert again.status_code == 409 and again.json()["code"] == "OPERATION_ALREADY_EXISTS"
    assert wait_operation(session, sandbox.url, op_id)["details"]["success_count"] == 2
    assert len(session.get(sandbox.url + BONUSES).json()["items"]) == 4


def test_sync_request_with_operation_id_is_readable_as_an_operation(sandbox):
    session = api_session()
    op_id = str(uuid.uuid4())
    session.post(sandbox.url + BONUSES, params={"operation_id": op_id, "skip_invalid_items": "true"},
                 json=[bonus(1), bonus(2, amount=0)])
    op = session.get(f"{sandbox.url}/api/v1/operations/{op_id}").json()
    assert op["status"] == "SUCCESS" and op["details"]["success_count"] == 1 and op["details"]["not_valid_count"] == 1
    log = session.get(f"{sandbox.url}/api/v1/operations/{op_id}/log").json()
    assert [entry["type"] for entry in log] == ["USER_BONUS_PERSIST", "USER_BONUS_VALIDATE"]


def test_bad_operation_id_and_bad_json_are_400(sandbox):
    session = api_session()
    assert session.post(sandbox.url + BONUSES, params={"operation_id": "nope"}, json=bonus()).status_code == 400
    assert session.post(sandbox.url + BONUSES, data=b"{nope", headers={"Content-Type": "application/json"}).status_code == 400
    assert session.post(sandbox.url + BONUSES, json=[]).status_code == 400


def test_get_bonus_by_id_and_missing_is_404(sandbox):
    session = api_session()
    created = session.post(sandbox.url + BONUSES, json=bonus()).json()
    assert session.get(f"{sandbox.url}{BONUSES}/{created['id']}").json() == created
    missing = session.get(f"{sandbox.url}{BONUSES}/999")
    assert missing.status_code == 404 and missing.json()["code"] == "DOES_NOT_EXIST"


def test_listing_filters_sorts_and_pages(sandbox):
    session = api_session()
    session.post(sandbox.url + BONUSES, json=[bonus(i % 3, amount=1 + i, private_comment=f"c{i % 2}") for i in range(10)])
    url = sandbox.url + BONUSES
    everything = session.get(url, params={"limit": 300}).json()
    ids = [item["id"] for item in everything["items"]]
    assert ids == sorted(ids) == sorted(ids, key=int) and not everything["has_more"]
    page = session.get(url, params={"limit": 4}).json()
    assert len(page["items"]) == 4 and page["has_more"]
    assert [i["id"] for i in session.get(url, params={"id_gt": ids[3], "id_lte": ids[5]}).json()["items"]] == ids[4:6]
    assert [i["id"] for i in session.get(url, params={"id_gte": ids[8], "id_lt": ids[9]}).json()["items"]] == [ids[8]]
    assert {i["user_id"] for i in session.get(url, params={"user_id": user_id(1)}).json()["items"]} == {user_id(1)}
    assert len(session.get(url, params={"private_comment": "c1"}).json()["items"]) == 5
    assert [i["id"] for i in session.get(url, params={"sort": "-id"}).json()["items"]] == ids[::-1]
    created = everything["items"][0]["created"]
    assert len(session.get(url, params={"created_gte": created}).json()["items"]) == 10
    assert session.get(url, params={"created_lt": created}).json()["items"] == []
    assert len(session.get(url, params={"created_gt": "2020-01-01", "sort": "created,-id"}).json()["items"]) == 10
    assert session.get(url, params={"limit": 301}).status_code == 400
    assert session.get(url, params={"sort": "amount"}).status_code == 400
