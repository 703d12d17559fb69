"""The client against a hostile server (a proxy in front of a real sandbox): every lie gives the right error
type or value, in bounded time, and nothing the server did not definitively show is taken as definitive."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
import pytest
from hostile_proxy import LOG, OPERATION, SUBMIT, Answer, HostileProxy, hostile, kind_of  # noqa: F401 (fixture)
from sandbox_fixtures import TOKEN, api_session, bonus, stats, user_id, wait_operation

from pipeline.errors import (
    ApiError,
    ApiRejectedError,
    ApiTransientError,
    ApiUnexpectedAnswer,
    ApiUnreachable,
)
from pipeline.toloka import RetryPolicy, TolokaClient

FAST = RetryPolicy(max_retries=2, base_s=0.001, max_s=0.01)
NO_RETRY = RetryPolicy(max_retries=0)
DEADLINE_S = 1.0
SLACK_S = 1.5  # scheduling slack on a loaded CI machine; a drip without the deadline takes minutes


def client_for(proxy: HostileProxy, retry: RetryPolicy = FAST, deadline_s: float = 2.0) -> TolokaClient:
    return TolokaClient(proxy.url, TOKEN, timeout_s=5, deadline_s=deadline_s, retry=retry)


def submit(client: TolokaClient, n: int = 3) -> tuple[str, list[dict[str, Any]]]:
    """POST n bonuses (keys k0..) under a fresh operation id; returns (id, items)."""
    items = [bonus(i + 1, amount=1.5 + i, __item_idx=f"k{i}") for i in range(n)]
    op_id = str(uuid.uuid4())
    client.create_bonuses_async(orjson.dumps(items), op_id)
    return op_id, items


def finished(proxy: HostileProxy, op_id: str) -> dict[str, Any]:
    """The operation once done, asked of the sandbox itself (not through the proxy)."""
    return wait_operation(api_session(), proxy.sandbox.url, op_id)


def log_under(proxy: HostileProxy, mode: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Pay 3 bonuses honestly, then read the operation's log through `mode`: (log, items sent)."""
    with client_for(proxy) as client:
        op_id, items = submit(client)
        finished(proxy, op_id)
        proxy.set(mode)
        return client.get_operation_log(op_id), items


def test_honest_by_default_and_counts_requests_per_kind(hostile: HostileProxy) -> None:
    with client_for(hostile) as client:
        op_id, _ = submit(client)
        finished(hostile, op_id)
        assert client.get_operation(op_id)["status"] == "SUCCESS"
        assert [e["success"] for e in client.get_operation_log(op_id)] == [True] * 3
        assert client.get_operation(str(uuid.uuid4())) is None
    assert hostile.counts == {SUBMIT: 1, OPERATION: 2, LOG: 1}
    assert not hostile.altered
    assert kind_of("GET", "/api/v1/user-bonuses/12?x=1") == "GET /user-bonuses/{id}"


def test_honest_answers_gzipped_and_chunked_read_the_same(hostile: HostileProxy) -> None:
    hostile.gzip = hostile.chunked = True
    with client_for(hostile) as client:
        op_id, items = submit(client, 400)
        finished(hostile, op_id)
        log = client.get_operation_log(op_id)
        assert [e["input"]["__item_idx"] for e in log] == [i["__item_idx"] for i in items]


def test_success_without_id_is_passed_on_as_the_server_said_it(hostile: HostileProxy) -> None:
    """The client does not judge log entries: a success without a bonus id reaches the caller as such."""
    log, _ = log_under(hostile, "success_without_id")
    assert [(e["success"], "user_bonus_id" in e["output"]) for e in log] == [(True, False)] * 3
    assert hostile.altered == {LOG: 1}


def test_fail_with_empty_log_while_the_server_paid(hostile: HostileProxy) -> None:
    with client_for(hostile) as client:
        op_id, _ = submit(client)
        assert finished(hostile, op_id)["status"] == "SUCCESS"  # what really happened
        hostile.set("fail_empty_log")
        assert client.get_operation(op_id)["status"] == "FAIL"
        assert client.get_operation_log(op_id) == []
    assert stats(hostile.sandbox.url)["bonuses_created"] == 3


def test_post_answered_html_404_after_the_server_committed_is_unexpected_not_refused(hostile: HostileProxy) -> None:
    hostile.set("post_html_404", times=1)
    with client_for(hostile) as client:
        op_id = str(uuid.uuid4())
        with pytest.raises(ApiUnexpectedAnswer) as err:
            client.create_bonuses_async(orjson.dumps([bonus(1)]), op_id)
        assert not isinstance(err.value, ApiRejectedError) and err.value.status == 404
        assert "text/html" in str(err.value) and "<html" not in str(err.value)
        assert hostile.mode is None  # times=1 spent: honest again
        assert client.get_operation(op_id)["id"] == op_id  # the server did create it
    assert hostile.counts[SUBMIT] == 1 and client.requests_made == {"submit": 1, "poll": 1}


@pytest.mark.parametrize("framing", ["plain", "chunked+gzip"])
@pytest.mark.parametrize("mode", ["drip_body", "drip_headers"])
def test_a_dripping_answer_ends_at_the_deadline(hostile: HostileProxy, mode: str, framing: str) -> None:
    hostile.gzip = hostile.chunked = framing != "plain"
    with client_for(hostile, deadline_s=DEADLINE_S) as client:
        op_id, _ = submit(client)  # honest
        hostile.set(mode)
        started = time.monotonic()
        with pytest.raises(ApiTransientError, match=r"exceeded the 1 s deadline") as err:
            client.create_bonuses_async(orjson.dumps([bonus(1)]), str(uuid.uuid4()))
        assert time.monotonic() - started < DEADLINE_S + SLACK_S
        assert type(err.value) is ApiTransientError
        hostile.honest()
        assert client.get_operation(op_id)["id"] == op_id  # the client works on after a cut exchange


def test_a_dripping_get_gives_up_after_its_retries_each_within_the_deadline(hostile: HostileProxy) -> None:
    hostile.set("drip_body")
    with client_for(hostile, retry=RetryPolicy(max_retries=1, base_s=0.001, max_s=0.001),
                    deadline_s=DEADLINE_S) as client:
        started = time.monotonic()
        with pytest.raises(ApiUnreachable, match="deadline"):
            client.get_operation(str(uuid.uuid4()))
        assert time.monotonic() - started < 2 * DEADLINE_S + SLACK_S
        assert client.requests_made == {"poll": 2}


def test_a_slow_answer_that_ends_before_the_deadline_is_read(hostile: HostileProxy) -> None:
    with client_for(hostile, deadline_s=30) as client:
        op_id, _ = submit(client)
        hostile.set("drip_body", interval_s=0.001)
        assert client.get_operation(op_id)["id"] == op_id
    assert hostile.altered == {OPERATION: 1}


def test_a_list_instead_of_the_operation_is_unexpected(hostile: HostileProxy) -> None:
    hostile.set("list_instead_of_operation")
    with client_for(hostile) as client:
        op_id = str(uuid.uuid4())
        with pytest.raises(ApiUnexpectedAnswer, match="JSON list, not an operation"):
            client.create_bonuses_async(orjson.dumps([bonus(1)]), op_id)
        with pytest.raises(ApiUnexpectedAnswer, match="gave up after 3 attempts"):
            client.get_operation(op_id)
        assert client.requests_made == {"submit": 1, "poll": FAST.max_retries + 1}
    assert finished(hostile, op_id)["id"] == op_id  # committed all along


def test_stuck_running_is_reported_as_running(hostile: HostileProxy) -> None:
    with client_for(hostile) as client:
        op_id, _ = submit(client)
        assert finished(hostile, op_id)["status"] == "SUCCESS"
        hostile.set("stuck_running")
        assert [client.get_operation(op_id)["status"] for _ in range(3)] == ["RUNNING"] * 3


def test_exists_then_missing_is_a_refusal_then_absent_and_nothing_reaches_the_server(hostile: HostileProxy) -> None:
    hostile.set("exists_then_missing")
    with client_for(hostile) as client:
        op_id = str(uuid.uuid4())
        with pytest.raises(ApiRejectedError) as err:
            client.create_bonuses_async(orjson.dumps([bonus(1)]), op_id)
        assert (err.value.status, err.value.code) == (409, "OPERATION_ALREADY_EXISTS")
        assert client.get_operation(op_id) is None
    assert "POST /api/v1/user-bonuses" not in stats(hostile.sandbox.url)["requests"]


def test_log_mismatch_reaches_the_caller_with_the_altered_inputs(hostile: HostileProxy) -> None:
    log, items = log_under(hostile, "log_mismatch")
    for entry, item in zip(log, items, strict=True):
        assert entry["input"]["__item_idx"] == item["__item_idx"]
        assert entry["input"]["user_id"] != item["user_id"] and entry["input"]["amount"] != item["amount"]


def test_html_404_on_get_operation_is_unexpected_not_absent(hostile: HostileProxy) -> None:
    with client_for(hostile) as client:
        op_id, _ = submit(client)
        hostile.set("html_404_get")
        with pytest.raises(ApiUnexpectedAnswer) as err:
            client.get_operation(op_id)
        assert err.value.status == 404
        assert hostile.altered == {OPERATION: FAST.max_retries + 1}
        finished(hostile, op_id)
        assert len(client.get_operation_log(op_id)) == 3  # other answers untouched


def test_2xx_that_is_not_json_is_unexpected(hostile: HostileProxy) -> None:
    hostile.set("not_json")
    with client_for(hostile) as client:
        with pytest.raises(ApiUnexpectedAnswer, match="not JSON"):
            client.create_bonuses_async(orjson.dumps([bonus(1)]), str(uuid.uuid4()))


def test_every_mode_ends_in_an_api_error_or_a_value_never_a_crash(hostile: HostileProxy) -> None:
    """Each mode, the whole client surface: no AttributeError/KeyError/TypeError, all in bounded time."""
    with client_for(hostile, retry=NO_RETRY, deadline_s=DEADLINE_S) as client:
        known, _ = submit(client)
        finished(hostile, known)
        bonus_id = client.get_operation_log(known)[0]["output"]["user_bonus_id"]
        calls = {
            "submit": lambda: client.create_bonuses_async(orjson.dumps([bonus(9)]), str(uuid.uuid4())),
            "poll": lambda: client.get_operation(known),
            "log": lambda: client.get_operation_log(known),
            "bonus": lambda: client.get_user_bonus(bonus_id),
            "list": lambda: list(client.iter_user_bonuses(user_id=user_id(1))),
            "operations": lambda: list(client.iter_operations(status="SUCCESS")),
        }
        for mode in sorted({"success_without_id", "fail_empty_log", "post_html_404", "list_instead_of_operation",
                            "stuck_running", "exists_then_missing", "log_mismatch", "html_404_get", "not_json"}):
            hostile.set(mode)
            for call in calls.values():
                try:
                    call()
                except ApiError:
                    pass
    hostile.set("drip_body")
    with client_for(hostile, retry=NO_RETRY, deadline_s=0.5) as client:
        started = time.monotonic()
        for call in calls.values():
            with pytest.raises(ApiTransientError, match="deadline"):
                call()
        assert time.monotonic() - started < len(calls) * 0.5 + SLACK_S


def test_modes_are_checked_and_switchable(hostile: HostileProxy) -> None:
    with pytest.raises(ValueError, match="unknown mode"):
        hostile.set("lie_a_little")
    hostile.mode = "stuck_running"
    assert hostile.mode == "stuck_running"
    hostile.mode = None
    assert hostile.mode is None


def test_replace_and_rewrite_make_up_any_answer(hostile: HostileProxy) -> None:
    hostile.set("replace", fn=lambda kind: Answer.json(200, {"items": [], "has_more": True})
                if kind == "GET /user-bonuses" else None)
    with client_for(hostile) as client:
        with pytest.raises(ApiUnexpectedAnswer, match="does not get past"):
            list(client.iter_user_bonuses())  # has_more with no items: neither a loop nor a complete listing
        hostile.set("rewrite", fn=lambda kind, answer: Answer(answer.status, answer.headers, b"")
                    if kind == OPERATION else None)
        with pytest.raises(ApiUnexpectedAnswer):
            client.get_operation(str(uuid.uuid4()))  # an empty 404: not "does not exist"
