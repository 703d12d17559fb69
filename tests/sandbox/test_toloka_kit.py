"""Toloka's own client (toloka-kit 1.2.3), unchanged, against the sandbox over real HTTP."""
from __future__ import annotations

import uuid
from decimal import Decimal

import httpx
import pytest

# A plain import, not importorskip: the test extra pins toloka-kit, and a kit that cannot import (e.g. a
# setuptools without pkg_resources) must fail CI, not skip the proof that the sandbox speaks Toloka's wire format.
from sandbox_fixtures import TOKEN, api_session, set_faults, stats, user_id, wait_operation  # noqa: E402
from toloka.client import TolokaClient, UserBonus  # noqa: E402
from toloka.client.exceptions import (  # noqa: E402
    ApiError,
    IncorrectActionsApiError,
    TooManyRequestsApiError,
    ValidationApiError,
    raise_on_api_error,
)
from toloka.client.operations import UserBonusCreateBatchOperation  # noqa: E402
from toloka.client.user_bonus import UserBonusesCreateRequestParameters  # noqa: E402


@pytest.fixture
def client(sandbox) -> TolokaClient:
    return TolokaClient(TOKEN, url=sandbox.url, retries=0)


def kit_bonus(n: int, amount: str = "1.50", **extra) -> UserBonus:
    return UserBonus(user_id=user_id(n), amount=Decimal(amount), public_title={"EN": "Thanks"},
                     public_message={"EN": f"Bonus {n}"}, without_message=False, **extra)


def test_create_user_bonus_default_sync_via_async(client):
    created = client.create_user_bonus(kit_bonus(1, private_comment="kit"))
    assert created.id and created.amount == Decimal("1.50") and created.private_comment == "kit"
    assert client.get_user_bonus(created.id).user_id == user_id(1)


def test_create_user_bonuses_default_path_maps_results_back_to_inputs(client):
    items = [kit_bonus(1), kit_bonus(2, amount="0.001"), kit_bonus(3, amount="2.25")]
    result = client.create_user_bonuses(items, skip_invalid_items=True)
    assert sorted(result.items) == ["0", "2"]
    assert result.items["2"].amount == Decimal("2.25") and result.items["2"].user_id == user_id(3)
    assert result.validation_errors["1"]["amount"]["code"] == "VALUE_LESS_THAN_MIN"


def test_create_user_bonuses_sync_mode(client):
    result = client.create_user_bonuses([kit_bonus(1), kit_bonus(2)], async_mode=False)
    assert sorted(result.items) == ["0", "1"] and not result.validation_errors
    single = client.create_user_bonus(kit_bonus(3), async_mode=False)
    assert single.id and single.user_id == user_id(3)


def test_async_create_wait_and_log(client):
    op = client.create_user_bonuses_async([kit_bonus(1), kit_bonus(2)], skip_invalid_items=True)
    assert isinstance(op, UserBonusCreateBatchOperation)
    done = client.wait_operation(op, disable_progress=True)
    assert done.status.value == "SUCCESS" and done.details.success_count == 2
    log = client.get_operation_log(op.id)
    assert [item.type for item in log] == ["USER_BONUS_PERSIST", "USER_BONUS_PERSIST"]
    ids = [item.output["user_bonus_id"] for item in log]
    listed = list(client.get_user_bonuses(id_gte=min(ids), id_lte=max(ids)))
    assert [b.id for b in listed] == sorted(ids)


def test_get_user_bonuses_pages_through_everything(client):
    client.create_user_bonuses([kit_bonus(i) for i in range(30)], async_mode=False)
    everything = list(client.get_user_bonuses(batch_size=7))
    assert len(everything) == 30 and len({b.id for b in everything}) == 30
    assert client.find_user_bonuses(user_id=user_id(4), limit=5).items[0].user_id == user_id(4)


def test_all_invalid_raises_validation_error(client):
    with pytest.raises(ValidationApiError) as sync_error:
        client.create_user_bonuses([kit_bonus(1, amount="500")], async_mode=False)
    assert sync_error.value.payload["0"]["amount"]["code"] == "VALUE_GREATER_THAN_MAX"
    with pytest.raises(ValidationApiError) as via_async:
        client.create_user_bonuses([kit_bonus(1, amount="500")], skip_invalid_items=True)
    assert via_async.value.payload["0"]["amount"]["code"] == "VALUE_GREATER_THAN_MAX"


def test_identical_bonuses_raise_409_entity_conflict(client):
    with pytest.raises(ApiError) as conflict:
        client.create_user_bonuses([kit_bonus(1), kit_bonus(1)], async_mode=False)
    assert conflict.value.status_code == 409 and conflict.value.code == "ENTITY_CONFLICT"


def test_repeated_operation_id_is_read_back_not_paid_twice(client, sandbox):
    op_id = uuid.uuid4()
    params = UserBonusesCreateRequestParameters(operation_id=op_id, skip_invalid_items=True)
    first = client.create_user_bonuses([kit_bonus(1), kit_bonus(2)], parameters=params)
    second = client.create_user_bonuses([kit_bonus(1), kit_bonus(2)], parameters=params)
    assert sorted(first.items) == sorted(second.items) == ["0", "1"]
    assert len(list(client.get_user_bonuses())) == 2
    again = client.create_user_bonuses_async([kit_bonus(1), kit_bonus(2)], operation_id=op_id)
    assert again.id == str(op_id) and again.status.value == "SUCCESS"
    raw = httpx.post(f"{sandbox.url}/api/v1/user-bonuses", json=[{"user_id": user_id(3), "amount": 1}],
                     params={"async_mode": "true", "operation_id": str(op_id)}, headers={"Authorization": f"OAuth {TOKEN}"})
    with pytest.raises(IncorrectActionsApiError) as repeated:
        raise_on_api_error(raw)
    assert repeated.value.code == "OPERATION_ALREADY_EXISTS" and repeated.value.status_code == 409



def test_kit_reads_an_injected_429_as_too_many_requests(client, sandbox):
    # With retries on, toloka-kit 1.2.3 crashes on any 429 carrying Retry-After (its GetBackoffTime returns
    # the retry state instead of seconds: TypeError inside tenacity), so this checks the error mapping only.
    set_faults(sandbox.url, "http_429=1")
    with pytest.raises(TooManyRequestsApiError) as limited:
        client.find_user_bonuses(limit=5)
    assert limited.value.status_code == 429 and limited.value.payload == {"interval": "MIN"}
    assert stats(sandbox.url)["faults"] == {"http_429": 1}


def test_find_and_get_operations(client, sandbox):
    session = api_session()
    ops = [client.create_user_bonuses_async([kit_bonus(n)]) for n in range(3)]
    for op in ops:
        wait_operation(session, sandbox.url, op.id)  # toloka-kit's own wait_operation sleeps 0.5 s or more
    every = list(client.get_operations(batch_size=2))
    assert [op.id for op in every] == sorted(op.id for op in ops)
    assert all(isinstance(op, UserBonusCreateBatchOperation) and op.status.value == "SUCCESS" for op in every)
    assert every[0] == client.get_operation(every[0].id)
    newest = client.find_operations(type="USER_BONUS.BATCH_CREATE", status="SUCCESS", sort=["-submitted", "id"], limit=2)
    assert newest.has_more is True and newest.items[0].submitted >= newest.items[1].submitted
    oldest = min(every, key=lambda op: (op.submitted, op.id))
    assert {op.id for op in client.get_operations(submitted_gte=oldest.submitted)} == {op.id for op in ops}
    assert {op.id for op in client.get_operations(finished_gt=max(op.finished for op in every))} == set()
    assert client.find_operations(type="POOL.OPEN").items == []
