"""Our API client against the sandbox over real HTTP: error translation, retries, quota, paging."""

from __future__ import annotations

import uuid

import orjson
import pytest
from sandbox_fixtures import TOKEN, bonus, set_faults

from pipeline.errors import ApiRejectedError, ApiTransientError, ApiUnreachable, AuthRefused, QuotaExhausted
from pipeline.sandbox import SandboxServer
from pipeline.toloka import RetryPolicy, TolokaClient

FAST = RetryPolicy(max_retries=2, base_s=0.001, max_s=0.01)


def client_for(url: str, token: str = TOKEN) -> TolokaClient:
    return TolokaClient(url, token, timeout_s=5, retry=FAST)


def test_submit_poll_and_log_round_trip(sandbox) -> None:
    with client_for(sandbox.url) as client:
        op_id = str(uuid.uuid4())
        op = client.create_bonuses_async(orjson.dumps([bonus(1, __item_idx="k1")]), op_id)
        assert op["id"] == op_id and op["type"] == "USER_BONUS.BATCH_CREATE"
        while (op := client.get_operation(op_id))["status"] not in ("SUCCESS", "FAIL"):
            pass
        [entry] = client.get_operation_log(op_id)
        assert entry["input"]["__item_idx"] == "k1" and entry["success"]
        assert client.requests_made == {"submit": 1, "poll": client.requests_made["poll"], "log": 1}


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


def test_listing_pages_by_id_until_has_more_is_false(sandbox) -> None:
    with client_for(sandbox.url) as client:
        op_id = str(uuid.uuid4())
        client.create_bonuses_async(orjson.dumps([bonus(i) for i in range(650)]), op_id)
        while client.get_operation(op_id)["status"] != "SUCCESS":
            pass
        ids = [b["id"] for b in client.iter_user_bonuses()]
        assert len(ids) == 650 and ids == sorted(ids)
        assert client.requests_made["list"] == 3  # 300 + 300 + 50
