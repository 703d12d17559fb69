"""Our API client over real HTTP, against the sandbox and against answers the hostile proxy makes up: error
translation (what is definitive and what is not), answer shapes, retries, rate limits and quota, paging."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hostile_proxy import OPERATION, SUBMIT, Answer, HostileProxy, hostile  # noqa: F401 (fixture)
from sandbox_fixtures import TOKEN, bonus, set_faults

from pipeline.errors import (
    ApiRejectedError,
    ApiTransientError,
    ApiUnexpectedAnswer,
    ApiUnreachable,
    AuthRefused,
    QuotaExhausted,
    RateLimited,
)
from pipeline.sandbox import SandboxServer
from pipeline.toloka import LogEntry, RetryPolicy, TolokaClient

FAST = RetryPolicy(max_retries=2, base_s=0.001, max_s=0.01)


def client_for(url: str, token: str = TOKEN, **kwargs: Any) -> TolokaClient:
    return TolokaClient(url, token, timeout_s=5, deadline_s=5, retry=FAST, **kwargs)


def test_submit_poll_and_log_round_trip(sandbox) -> None:
    with client_for(sandbox.url) as client:
        op_id = str(uuid.uuid4())
        op = client.create_bonuses_async(orjson.dumps([bonus(1, __item_idx="k1")]), op_id)
        assert op["id"] == op_id and op["type"] == "USER_BONUS.BATCH_CREATE"
        while (op := client.get_operation(op_id))["status"] not in ("SUCCESS", "FAIL"):
            pass
        [entry] = client.get_operation_log(op_id)
        assert entry["input"]["__item_idx"] == "k1" and entry["success"]
        [decoded] = client.get_operation_log_entries(op_id)
        assert isinstance(decoded, LogEntry) and decoded.input is not None and decoded.input.item_idx == "k1"
        assert (decoded.success, decoded.output) == (True, entry["output"])
        assert client.requests_made == {"submit": 1, "poll": client.requests_made["poll"], "log": 2}


def test_repeated_operation_id_is_a_definite_refusal_with_its_code(sandbox) -> None:
    with client_for(sandbox.url) as client:
        op_id = str(uuid.uuid4())
        client.create_bonuses_async(orjson.dumps([bonus(1)]), op_id)
        with pytest.raises(ApiRejectedError) as err:
            client.create_bonuses_async(orjson.dumps([bonus(1)]), op_id)
        assert (err.value.status, err.value.code) == (409, "OPERATION_ALREADY_EXISTS")
        assert err.value.request_id


def test_unknown_operation_is_none_not_an_error(sandbox) -> None:
    with client_for(sandbox.url) as client:
        assert client.get_operation(str(uuid.uuid4())) is None
        assert client.get_user_bonus("999999999999") is None


def test_wrong_token_is_auth_refused_and_never_echoed(sandbox) -> None:
    with client_for(sandbox.url, token="s3cret-wrong") as client:
        with pytest.raises(AuthRefused) as err:
            client.get_operation(str(uuid.uuid4()))
        assert "s3cret-wrong" not in str(err.value)


def test_gets_are_retried_through_5xx_then_give_up_as_unreachable(sandbox) -> None:
    set_faults(sandbox.url, "http_500=1.0")
    with client_for(sandbox.url) as client:
        with pytest.raises(ApiUnreachable):
            client.get_operation(str(uuid.uuid4()))
        assert client.requests_made["poll"] == FAST.max_retries + 1
    set_faults(sandbox.url, "http_503=0.5", seed=3)
    with client_for(sandbox.url) as client:
        for _ in range(5):
            assert client.get_operation(str(uuid.uuid4())) is None  # 503s absorbed by retries


def test_posts_are_never_retried_by_the_client(sandbox) -> None:
    set_faults(sandbox.url, "http_500=1.0")
    with client_for(sandbox.url) as client:
        with pytest.raises(ApiTransientError):
            client.create_bonuses_async(orjson.dumps([bonus(1)]), str(uuid.uuid4()))
        assert client.requests_made == {"submit": 1}


def test_daily_quota_is_quota_exhausted_with_the_wait_until_midnight(tmp_path) -> None:
    with SandboxServer(tmp_path / "s.sqlite", token=TOKEN, daily_quota=1) as server, client_for(server.url) as c:
        c.create_bonuses_async(orjson.dumps([bonus(1)]), str(uuid.uuid4()))
        with pytest.raises(QuotaExhausted) as err:
            c.create_bonuses_async(orjson.dumps([bonus(2)]), str(uuid.uuid4()))
        assert 0 < err.value.retry_after <= 86400
        assert isinstance(err.value, RateLimited)


def test_listing_pages_by_id_until_has_more_is_false(sandbox) -> None:
    with client_for(sandbox.url) as client:
        op_id = str(uuid.uuid4())
        client.create_bonuses_async(orjson.dumps([bonus(i) for i in range(650)]), op_id)
        while client.get_operation(op_id)["status"] != "SUCCESS":
            pass
        ids = [b["id"] for b in client.iter_user_bonuses()]
        assert len(ids) == 650 and ids == sorted(ids)
        assert client.requests_made["list"] == 3  # 300 + 300 + 50


def test_a_short_429_is_rate_limited_with_its_wait_and_gets_wait_it_out(sandbox) -> None:
    set_faults(sandbox.url, "http_429=1.0")
    slept: list[float] = []
    with client_for(sandbox.url, sleep=slept.append) as client:
        with pytest.raises(RateLimited) as err:
            client.create_bonuses_async(orjson.dumps([bonus(1)]), str(uuid.uuid4()))
        assert type(err.value) is RateLimited and err.value.retry_after == 1.0
        assert getattr(err.value, "retry_after", None) == 1.0  # what callers read today
        with pytest.raises(ApiUnreachable):
            client.get_operation(str(uuid.uuid4()))
        assert slept == [1.0] * FAST.max_retries  # Retry-After wins over the tiny backoff
    assert ApiTransientError("x").retry_after is None


def test_iter_operations_pages_by_id_with_filters(sandbox) -> None:
    with client_for(sandbox.url) as client:
        before = datetime.now(UTC) - timedelta(minutes=1)
        op_ids = [str(uuid.uuid4()) for _ in range(5)]
        for i, op_id in enumerate(op_ids):
            client.create_bonuses_async(orjson.dumps([bonus(i + 1)]), op_id)
        for op_id in op_ids:
            while client.get_operation(op_id)["status"] not in ("SUCCESS", "FAIL"):
                pass
        ops = list(client.iter_operations(limit=2, type="USER_BONUS.BATCH_CREATE", status="SUCCESS",
                                          submitted_gte=before))
        assert [op["id"] for op in ops] == sorted(op_ids)
        assert client.requests_made["operations"] == 3  # 2 + 2 + 1
        assert list(client.iter_operations(status="FAIL")) == []
        assert list(client.iter_operations(submitted_gte=datetime.now(UTC) + timedelta(hours=1))) == []


# -- what is definitive and what is not: answers made up by the hostile proxy --------------------------

def _envelope(code: str, **extra: Any) -> dict[str, Any]:
    return {"request_id": "r-1", "code": code, "message": f"{code} says the test", **extra}


HTML = Answer.html_404().body
# (status, content type, body) of the answer to `GET /operations/{id}` -> get_operation's outcome
POLL_ANSWERS = {
    "json 404 DOES_NOT_EXIST": (404, "application/json", orjson.dumps(_envelope("DOES_NOT_EXIST")), None),
    "json 404 NOT_FOUND": (404, "application/json", orjson.dumps(_envelope("NOT_FOUND")), None),
    "json 404 other code": (404, "application/json", orjson.dumps(_envelope("ACCESS_DENIED")), ApiUnexpectedAnswer),
    "json 404 without code": (404, "application/json", b'{"message": "gone"}', ApiUnexpectedAnswer),
    "html 404": (404, "text/html", HTML, ApiUnexpectedAnswer),
    "empty 404": (404, "text/plain", b"", ApiUnexpectedAnswer),
    "redirect": (302, "text/html", HTML, ApiUnexpectedAnswer),
    "html 400": (400, "text/html", HTML, ApiUnexpectedAnswer),
    "json 400 envelope": (400, "application/json", orjson.dumps(_envelope("VALIDATION_ERROR")), ApiRejectedError),
    "html 502": (502, "text/html", HTML, ApiUnreachable),
    "html 403": (403, "text/html", HTML, AuthRefused),
}


@pytest.mark.parametrize("name", POLL_ANSWERS)
def test_only_a_toloka_envelope_is_definite(hostile: HostileProxy, name: str) -> None:
    status, content_type, body, expected = POLL_ANSWERS[name]
    hostile.set("replace", fn=lambda kind: Answer(status, [("Content-Type", content_type)], body)
                if kind == OPERATION else None)
    with client_for(hostile.url) as client:
        if expected is None:
            assert client.get_operation(str(uuid.uuid4())) is None
        else:
            with pytest.raises(expected) as err:
                client.get_operation(str(uuid.uuid4()))
            assert type(err.value) is expected
            assert err.value.status == status


@pytest.mark.parametrize(("body", "expected"), [
    (_envelope("OPERATION_ALREADY_EXISTS"), ("OPERATION_ALREADY_EXISTS", None)),
    # Toloka's documented bare 409 field map
    ({"user_id": {"code": "ENTITY_CONFLICT", "message": "same bonus twice"}}, ("ENTITY_CONFLICT", "user_id")),
])
def test_a_409_envelope_or_bare_field_map_is_a_refusal(hostile: HostileProxy, body: dict[str, Any],
                                                      expected: tuple[str, str | None]) -> None:
    hostile.set("replace", fn=lambda kind: Answer.json(409, body) if kind == SUBMIT else None)
    with client_for(hostile.url) as client, pytest.raises(ApiRejectedError) as err:
        client.create_bonuses_async(orjson.dumps([bonus(1)]), str(uuid.uuid4()))
    code, field = expected
    assert type(err.value) is ApiRejectedError and err.value.code == code
    assert field is None or field in err.value.payload


def test_a_bare_field_map_is_only_trusted_on_409(hostile: HostileProxy) -> None:
    body = {"user_id": {"code": "ENTITY_CONFLICT", "message": "same bonus twice"}}
    hostile.set("replace", fn=lambda kind: Answer.json(400, body) if kind == SUBMIT else None)
    with client_for(hostile.url) as client, pytest.raises(ApiUnexpectedAnswer):
        client.create_bonuses_async(orjson.dumps([bonus(1)]), str(uuid.uuid4()))


OP_ID = "6f1d7e8a-33a4-4f7e-9a0c-2d3b1c0e9f10"
GOOD_OP = {"id": OP_ID, "type": "USER_BONUS.BATCH_CREATE", "status": "RUNNING"}


@pytest.mark.parametrize(("answer", "problem"), [
    ({**GOOD_OP}, None),
    ({"id": OP_ID, "status": "PENDING"}, None),  # no type: fine
    ({**GOOD_OP, "id": OP_ID.upper()}, None),  # the same UUID, written in capitals
    ({**GOOD_OP, "id": OP_ID.replace("-", "")}, None),  # ... or without dashes
    ([GOOD_OP], "JSON list, not an operation"),
    ({"type": "USER_BONUS.BATCH_CREATE", "status": "RUNNING"}, "without a string id"),
    ({**GOOD_OP, "id": 42}, "without a string id"),
    ({**GOOD_OP, "id": str(uuid.uuid4())}, "not the"),
    ({**GOOD_OP, "status": "DONE"}, "status 'DONE'"),
    ({**GOOD_OP, "status": None}, "status None"),
    ({**GOOD_OP, "type": "POOL.OPEN"}, "type 'POOL.OPEN'"),
    ("SUCCESS", "JSON string"),
])
def test_an_operation_answer_must_be_the_bonus_operation_asked_for(hostile: HostileProxy, answer: Any,
                                                                   problem: str | None) -> None:
    hostile.set("replace", fn=lambda kind: Answer.json(201 if kind == SUBMIT else 200, answer)
                if kind in (SUBMIT, OPERATION) else None)
    with client_for(hostile.url) as client:
        if problem is None:
            assert client.create_bonuses_async(b"[]", OP_ID) == answer
            assert client.get_operation(OP_ID) == answer
            return
        with pytest.raises(ApiUnexpectedAnswer, match=problem):
            client.create_bonuses_async(b"[]", OP_ID)
        with pytest.raises(ApiUnexpectedAnswer, match=problem):
            client.get_operation(OP_ID)


@pytest.mark.parametrize(("kind", "answer", "call"), [
    ("GET /operations/{id}/log", {"items": []}, lambda c: c.get_operation_log(OP_ID)),
    ("GET /operations/{id}/log", [{"success": True}, "entry"], lambda c: c.get_operation_log(OP_ID)),
    ("GET /operations/{id}/log", {"items": []}, lambda c: c.get_operation_log_entries(OP_ID)),
    ("GET /operations/{id}/log", [{"success": True}, "entry"], lambda c: c.get_operation_log_entries(OP_ID)),
    ("GET /operations/{id}/log", "[{", lambda c: c.get_operation_log_entries(OP_ID)),
    ("GET /user-bonuses/{id}", {"id": "2"}, lambda c: c.get_user_bonus("1")),
    ("GET /user-bonuses/{id}", [], lambda c: c.get_user_bonus("1")),
    ("GET /user-bonuses", {"items": []}, lambda c: list(c.iter_user_bonuses())),
    ("GET /user-bonuses", {"items": [{"amount": 1}], "has_more": False}, lambda c: list(c.iter_user_bonuses())),
    ("GET /operations", {"items": [{"id": "a"}], "has_more": True}, lambda c: list(c.iter_operations())),
])
def test_other_answers_of_the_wrong_shape_are_unexpected(hostile: HostileProxy, kind: str, answer: Any,
                                                         call: Any) -> None:
    hostile.set("replace", fn=lambda k: Answer.json(200, answer) if k == kind else None)
    with client_for(hostile.url) as client, pytest.raises(ApiUnexpectedAnswer):
        call(client)
