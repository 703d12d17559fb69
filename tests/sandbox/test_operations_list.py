"""`GET /api/v1/operations` over real HTTP: filters, sorting, limit/has_more paging, errors, auth, toloka-kit."""
from __future__ import annotations

import operator
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from sandbox_fixtures import TOKEN, api_session, bonus, set_faults, stats, wait_operation

from pipeline.sandbox import SandboxServer
from pipeline.sandbox.store import Store

OPS = "/api/v1/operations"
BONUSES = "/api/v1/user-bonuses"
MANY = 1200
COMPARE: dict[str, Callable[[Any, Any], bool]] = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt,
                                                  "lte": operator.le}


def listing(session: requests.Session, url: str, **params: Any) -> dict[str, Any]:
    response = session.get(url + OPS, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def page_all(session: requests.Session, url: str, limit: int, descending: bool = False) -> list[list[dict[str, Any]]]:
    """Every page, paging by id as toloka-kit does (sort=id, id_gt=<last id>), or backwards with id_lt."""
    params: dict[str, Any] = {"limit": limit, "sort": "-id" if descending else "id"}
    pages = []
    while True:
        page = listing(session, url, **params)
        pages.append(page["items"])
        if not page["has_more"]:
            return pages
        params["id_lt" if descending else "id_gt"] = pages[-1][-1]["id"]


def wait_status(session: requests.Session, url: str, op_id: str, status: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while session.get(f"{url}{OPS}/{op_id}").json()["status"] != status:
        assert time.monotonic() < deadline, f"operation {op_id} never became {status}"
        time.sleep(0.005)


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SandboxServer, list[str]]]:
    """A sandbox holding MANY finished operations, written by the server's own store code (fast: no HTTP)."""
    db = tmp_path_factory.mktemp("many") / "sandbox.sqlite"
    store = Store(db)
    ids = [str(uuid.uuid4()) for _ in range(MANY)]
    try:
        for n, op_id in enumerate(ids):
            item = bonus(n)
            store.create_bonuses_sync([(0, item)], [], op_id, False, orjson.dumps([item]), 1)
    finally:
        store.close()
    with SandboxServer(db, token=TOKEN, rate_limit=1_000_000) as server:
        yield server, ids


def test_paging_by_id_sees_every_operation_once(many):
    server, ids = many
    session = api_session()
    pages = page_all(session, server.url, 400)
    assert [len(page) for page in pages] == [400, 400, 400]  # a full last page still says has_more: false
    assert [op["id"] for page in pages for op in page] == sorted(ids)  # no gaps, no repeats, ascending
    backwards = page_all(session, server.url, 333, descending=True)
    assert [len(page) for page in backwards] == [333, 333, 333, 201]
    assert [op["id"] for page in backwards for op in page] == sorted(ids, reverse=True)
    first = listing(session, server.url)
    assert len(first["items"]) == 50 and first["has_more"] is True  # default limit
    for op in first["items"][::10]:  # each item is exactly what GET /operations/{id} answers
        assert session.get(f"{server.url}{OPS}/{op['id']}").json() == op


def test_sorts_match_the_fields_with_id_breaking_ties(many):
    server, _ = many
    session = api_session()
    by_id = [op for page in page_all(session, server.url, 500) for op in page]
    for sort in ("id", "-id", "submitted", "-submitted", "finished", "-finished", "submitted,-id", "-finished,id"):
        expected = list(by_id)
        for key in reversed(sort.split(",")):  # stable sorts, last key first; ties end ascending by id
            name = key.removeprefix("-")
            expected.sort(key=lambda op, name=name: op[name], reverse=key.startswith("-"))
        page = listing(session, server.url, sort=sort, limit=500)
        assert page["items"] == expected[:500], sort
        assert page["has_more"] is True


def test_toloka_kit_get_and_find_operations_page_everything(many):
    from toloka.client import TolokaClient
    from toloka.client.operations import UserBonusCreateBatchOperation

    server, ids = many
    client = TolokaClient(TOKEN, url=server.url, retries=0)
    found = list(client.get_operations(batch_size=173))
    assert [op.id for op in found] == sorted(ids)
    assert all(isinstance(op, UserBonusCreateBatchOperation) and op.details.success_count == 1 for op in found)
    filtered = client.get_operations(status="SUCCESS", type="USER_BONUS.BATCH_CREATE")  # default batch: 50
    assert [op.id for op in filtered] == sorted(ids)
    assert list(client.get_operations(status="FAIL")) == []
    latest = client.find_operations(sort=["-submitted"], limit=3)
    assert latest.has_more is True and len(latest.items) == 3
    assert latest.items[0].submitted >= latest.items[1].submitted >= latest.items[2].submitted


@pytest.fixture
def mixed(tmp_path: Path) -> Iterator[tuple[SandboxServer, list[dict[str, Any]]]]:
    """A sandbox with operations in every state, each read back with GET /operations/{id}; sorted by id."""
    with SandboxServer(tmp_path / "sandbox.sqlite", token=TOKEN, rate_limit=1_000_000) as server:
        session = api_session()
        url = server.url + BONUSES
        created = [session.post(url, params={"async_mode": "true"}, json=[bonus(n)]).json()["id"] for n in range(3)]
        created.append(str(uuid.uuid4()))  # a sync POST with an operation_id records a finished operation
        assert session.post(url, params={"operation_id": created[-1]}, json=[bonus(9)]).status_code == 201
        assert session.post(url, json=[bonus(10)]).status_code == 201  # no operation_id: no operation
        set_faults(server.url, "op_fail=1")
        created.append(session.post(url, params={"async_mode": "true"}, json=[bonus(11)]).json()["id"])
        for op_id in created:
            wait_operation(session, server.url, op_id)
        set_faults(server.url, "slow_op_ms=60000")  # stays RUNNING: no `finished`
        created.append(session.post(url, params={"async_mode": "true"}, json=[bonus(12)]).json()["id"])
        wait_status(session, server.url, created[-1], "RUNNING")  # it has read its slow_op_ms by now
        set_faults(server.url, "")
        ops = sorted((session.get(f"{server.url}{OPS}/{op_id}").json() for op_id in created), key=lambda op: op["id"])
        assert {op["status"] for op in ops} >= {"SUCCESS", "FAIL"} and ops[0]["type"] == "USER_BONUS.BATCH_CREATE"
        yield server, ops


def test_every_filter_alone_and_combined(mixed):
    server, ops = mixed
    session = api_session()

    def check(expected: list[dict[str, Any]], **params: Any) -> None:
        page = listing(session, server.url, **params)
        assert page == {"items": expected, "has_more": False}, params

    check(ops)
    for status in ("PENDING", "RUNNING", "SUCCESS", "FAIL", "NO_SUCH_STATUS"):
        check([op for op in ops if op["status"] == status], status=status)
    check(ops, type="USER_BONUS.BATCH_CREATE")
    for other in ("OTHER_TYPE", "POOL.OPEN"):  # a free string in Toloka's OpenAPI, not an enum: no 400
        check([], type=other)
    middle = ops[len(ops) // 2]
    done = [op for op in ops if "finished" in op]
    assert len(done) == len(ops) - 1
    for suffix, compare in COMPARE.items():
        check([op for op in ops if compare(op["id"], middle["id"])], **{f"id_{suffix}": middle["id"]})
        for field in ("submitted", "finished"):
            pivot = done[len(done) // 2][field]
            having = [op for op in ops if field in op]
            check([op for op in having if compare(op[field], pivot)], **{f"{field}_{suffix}": pivot})
            check([op for op in having if compare(op[field], pivot)], **{f"{field}_{suffix}": pivot + "Z"})
            day = pivot[:10]  # a date alone is its midnight, UTC
            check([op for op in having if compare(op[field], day)], **{f"{field}_{suffix}": day})
    first = min(op["submitted"] for op in ops)
    check([op for op in ops if op["status"] == "SUCCESS" and op["submitted"] > first],
          status="SUCCESS", submitted_gt=first, finished_lte="2999-01-01")


def test_paging_while_operations_are_created_sees_every_earlier_one_once(mixed):
    server, ops = mixed
    session = api_session()
    params: dict[str, Any] = {"limit": 2}
    seen: list[str] = []
    while True:
        page = listing(session, server.url, **params)
        seen += [op["id"] for op in page["items"]]
        new = session.post(server.url + BONUSES, params={"operation_id": str(uuid.uuid4())}, json=[bonus(100 + len(seen))])
        assert new.status_code == 201  # a new operation lands before or after the cursor, by its random id
        if not page["has_more"]:
            break
        params["id_gt"] = seen[-1]
    assert len(seen) == len(set(seen)) and {op["id"] for op in ops} <= set(seen)


def test_bad_parameters_are_400_validation_errors(mixed):
    server, ops = mixed
    session = api_session()
    assert len(listing(session, server.url, limit=500)["items"]) == len(ops)
    for params, field, code in (
        ({"limit": 501}, "limit", "VALUE_OUT_OF_BOUNDS"), ({"limit": 0}, "limit", "VALUE_OUT_OF_BOUNDS"),
        ({"limit": "ten"}, "limit", "VALUE_OUT_OF_BOUNDS"), ({"sort": "created"}, "sort", "UNKNOWN_ENUM_VALUE"),
        ({"sort": "id,-status"}, "sort", "UNKNOWN_ENUM_VALUE"),
        ({"submitted_gt": "yesterday"}, "submitted_gt", "INVALID_DATE_TIME_SYNTAX"),
        ({"finished_lte": "2024-13-01"}, "finished_lte", "INVALID_DATE_TIME_SYNTAX"),
        ({"type": "OTHER_TYPE", "limit": 501}, "limit", "VALUE_OUT_OF_BOUNDS"),
    ):
        response = session.get(server.url + OPS, params=params)
        assert response.status_code == 400, params
        body = response.json()
        assert body["code"] == "VALIDATION_ERROR" and body["payload"][field]["code"] == code, body


def test_auth_and_faults_apply_as_on_every_api_endpoint(mixed):
    server, _ = mixed
    for headers in ({}, {"Authorization": "OAuth wrong"}):
        response = requests.get(server.url + OPS, headers=headers)
        assert response.status_code == 401 and response.json()["code"] == "AUTHENTICATION_ERROR"
    assert requests.get(server.url + OPS, headers={"Authorization": f"ApiKey {TOKEN}"}).status_code == 200
    set_faults(server.url, "http_500=1")
    assert api_session().get(server.url + OPS).json()["code"] == "INTERNAL_ERROR"
    counters = stats(server.url)
    assert counters["requests"]["GET /api/v1/operations"] == 4
    assert counters["faults"]["http_500"] == 1
