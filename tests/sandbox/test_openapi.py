"""Every answer of the sandbox, and every item our pipeline sends, against Toloka's own OpenAPI schemas.

Why: the sandbox stands in for Toloka in all our tests, so its answers must have Toloka's shape, not merely the
shape our client happens to read. The schemas are vendored in toloka_openapi_subset.json (regenerate with
make_openapi_subset.py; CI has no copy of Toloka/toloka-openapi). Validation is JSON Schema Draft 2020-12 with
format checking; `date-time` is checked against Toloka's documented timestamp form `YYYY-MM-DDThh:mm:ss[.sss]`
(UTC, no zone suffix), which strict RFC 3339 would reject.

Where Toloka's description and the sandbox differ (the sandbox is stricter or more specific; nothing here is
a wire non-conformance):
- Toloka's schemas have no `required` for responses (OperationViewV1, UserBonusViewV1's id/created,
  PageOf*.items/has_more). We additionally require what the sandbox always sends and our client reads
  (`_STRICT_*` below, `UserBonusBatchCreateOperationV1` in the subset).
- `GET /operations/{id}/log` is declared as ONE OperationLog object; Toloka (responses/api/operation-log.yaml,
  toloka-kit) and the sandbox answer a JSON array of them. We validate each element.
- OperationLog.type is free text in the schema; its description names USER_BONUS_PERSIST (success) and
  USER_BONUS_VALIDATE (failure) for bonuses, which is what we check.
- PageOfBonusV1.validation_errors is just `object`; the sandbox's `{idx: {field: {code, message}}}` fits.
- UserBonusFormV1.amount has only `minimum: 0.005`; the sandbox also enforces a maximum (100 by default).
  `public_title`/`public_message` are `type: object` (not nullable) although the description says to send
  `null` with `without_message: true`; our wire omits them instead, so we stay inside the schema.
- The 409 ENTITY_CONFLICT example in fullApi.yaml is the bare field map `{"user_id": {code, message}}`; the
  sandbox wraps that map as the envelope's `payload` (the `{request_id, code, message, payload}` envelope of
  info-description.md). Toloka's response schema for 409 is only `type: object`, so both validate.
"""
from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from sandbox_fixtures import TOKEN, api_session, bonus, set_faults, user_id, wait_operation

from pipeline import keys, validate, wire
from pipeline.sandbox import SandboxServer

SUBSET = json.loads(Path(__file__).with_name("toloka_openapi_subset.json").read_text(encoding="utf-8"))
BONUSES = "/api/v1/user-bonuses"
TOLOKA_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,3})?")

FORMATS = FormatChecker(formats=())


@FORMATS.checks("date-time")
def _toloka_time(value: object) -> bool:
    return not isinstance(value, str) or TOLOKA_TIME.fullmatch(value) is not None


@FORMATS.checks("int32")
def _int32(value: object) -> bool:
    return not isinstance(value, int) or -(2**31) <= value < 2**31


def validator(schema: dict[str, Any]) -> Draft202012Validator:
    """A validator for `schema`, resolving `#/$defs/...` against the vendored subset."""
    return Draft202012Validator({**schema, "$defs": SUBSET["$defs"]}, format_checker=FORMATS)


def conforms(name_or_schema: str | dict[str, Any], instance: Any) -> None:
    schema = {"$ref": f"#/$defs/{name_or_schema}"} if isinstance(name_or_schema, str) else name_or_schema
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator(schema).iter_errors(instance)]
    assert not errors, errors


# What the sandbox always sends on top of Toloka's (requirement-free) response schemas.
_STRICT_VIEW = {"allOf": [{"$ref": "#/$defs/UserBonusViewV1"}],
                "required": ["id", "created", "user_id", "amount", "without_message"]}
_STRICT_LIST = {"allOf": [{"$ref": "#/$defs/PageOfV1UserBonusViewV1"}], "required": ["items", "has_more"],
                "properties": {"items": {"items": _STRICT_VIEW}}}
_STRICT_PAGE = {"allOf": [{"$ref": "#/$defs/PageOfBonusV1"}], "required": ["items"],
                "properties": {"items": {"propertyNames": {"pattern": "^[0-9]+$"}, "additionalProperties": _STRICT_VIEW},
                               "validation_errors": {"propertyNames": {"pattern": "^[0-9]+$"}}}}
_STRICT_OPERATIONS = {"allOf": [{"$ref": "#/$defs/PageOfV1OperationViewV1"}], "required": ["items", "has_more"],
                      "properties": {"items": {"items": {"$ref": "#/$defs/UserBonusBatchCreateOperationV1"}}}}
_LOG = {"type": "array", "items": {"allOf": [{"$ref": "#/$defs/OperationLog"}],
                                   "required": ["type", "success", "input", "output"]}}


def error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    conforms("ErrorEnvelope", body)
    assert body["code"] == code
    return body


def test_subset_is_a_valid_json_schema_and_names_its_source():
    Draft202012Validator.check_schema(SUBSET)
    assert "Apache License" in SUBSET["$comment"] and "YANDEX LLC" in SUBSET["$comment"]
    assert not TOLOKA_TIME.fullmatch("2024-01-02T03:04:05Z")  # the regex is really Toloka's form


def test_sync_single_and_list_answers(sandbox):
    session = api_session()
    single = session.post(sandbox.url + BONUSES, json=bonus(1, private_comment="c", assignment_id="a-1"))
    assert single.status_code == 201
    conforms(_STRICT_VIEW, single.json())

    bad = {"user_id": "not-a-user", "amount": 1, "without_message": True}
    page = session.post(sandbox.url + BONUSES, params={"skip_invalid_items": "true"},
                        json=[bonus(2), bad, bonus(3, without_message=True, public_title=None, public_message=None)])
    assert page.status_code == 201
    body = page.json()
    conforms(_STRICT_PAGE, body)
    assert set(body["items"]) == {"0", "2"} and set(body["validation_errors"]) == {"1"}


def test_async_operation_lifecycle_and_log(sandbox):
    session = api_session()
    set_faults(sandbox.url, "slow_op_ms=150")
    items = [bonus(1, __item_idx="k1"), bonus(2, amount=0.001, __item_idx="k2")]
    posted = session.post(sandbox.url + BONUSES, params={"async_mode": "true", "skip_invalid_items": "true",
                                                         "operation_id": str(uuid.uuid4())}, json=items)
    assert posted.status_code == 201
    pending = posted.json()
    conforms("UserBonusBatchCreateOperationV1", pending)
    assert pending["status"] == "PENDING"
    url = f"{sandbox.url}/api/v1/operations/{pending['id']}"
    seen = {session.get(url).json()["status"] for _ in range(3)}
    assert seen & {"PENDING", "RUNNING"}
    running = session.get(url).json()
    conforms("UserBonusBatchCreateOperationV1", running)
    done = wait_operation(session, sandbox.url, pending["id"])
    conforms("UserBonusBatchCreateOperationV1", done)
    assert done["status"] == "SUCCESS" and done["details"]["success_count"] == 1

    log = session.get(url + "/log").json()
    conforms(_LOG, log)
    assert [(e["type"], e["success"]) for e in log] == [("USER_BONUS_PERSIST", True), ("USER_BONUS_VALIDATE", False)]
    assert set(log[0]["output"]) == {"user_bonus_id"} and "amount" in log[1]["output"]


def test_failed_operation_and_its_log(sandbox):
    session = api_session()
    set_faults(sandbox.url, "op_fail=1")
    op = session.post(sandbox.url + BONUSES, params={"async_mode": "true"}, json=[bonus(1)]).json()
    done = wait_operation(session, sandbox.url, op["id"])
    conforms("UserBonusBatchCreateOperationV1", done)
    assert done["status"] == "FAIL"
    log = session.get(f"{sandbox.url}/api/v1/operations/{op['id']}/log").json()
    conforms(_LOG, log)
    assert log[0]["type"] == "USER_BONUS_PERSIST" and log[0]["success"] is False
    assert {"code", "message"} <= set(log[0]["output"])


def test_listing_and_single_bonus(sandbox):
    session = api_session()
    session.post(sandbox.url + BONUSES, json=[bonus(1), bonus(2, without_message=True, public_title=None,
                                                                public_message=None)])
    first = session.get(sandbox.url + BONUSES, params={"limit": 1, "sort": "id"}).json()
    conforms(_STRICT_LIST, first)
    assert first["has_more"] is True
    rest = session.get(sandbox.url + BONUSES, params={"id_gt": first["items"][0]["id"], "sort": "id"}).json()
    conforms(_STRICT_LIST, rest)
    assert rest["has_more"] is False and len(rest["items"]) == 1
    one = session.get(f"{sandbox.url}{BONUSES}/{rest['items'][0]['id']}")
    assert one.status_code == 200
    conforms(_STRICT_VIEW, one.json())


def test_operations_list_pages(sandbox):
    session = api_session()
    set_faults(sandbox.url, "op_fail=1")
    failed = session.post(sandbox.url + BONUSES, params={"async_mode": "true"}, json=[bonus(1)]).json()
    wait_operation(session, sandbox.url, failed["id"])
    set_faults(sandbox.url, "slow_op_ms=60000")
    pending = session.post(sandbox.url + BONUSES, params={"async_mode": "true"}, json=[bonus(2)]).json()
    synced = str(uuid.uuid4())
    session.post(sandbox.url + BONUSES, params={"operation_id": synced, "skip_invalid_items": "true"},
                 json=[bonus(3), {"user_id": "nobody", "amount": 1, "without_message": True}])
    url = sandbox.url + "/api/v1/operations"
    whole = session.get(url, params={"sort": "-submitted"}).json()
    conforms(_STRICT_OPERATIONS, whole)
    assert {op["id"] for op in whole["items"]} == {failed["id"], pending["id"], synced} and not whole["has_more"]
    statuses = sorted(op["status"] for op in whole["items"])
    assert statuses in (["FAIL", "PENDING", "SUCCESS"], ["FAIL", "RUNNING", "SUCCESS"])
    first = session.get(url, params={"limit": 1}).json()
    conforms(_STRICT_OPERATIONS, first)
    assert first["has_more"] is True and len(first["items"]) == 1


def test_error_envelopes(sandbox):
    session = api_session()
    url = sandbox.url + BONUSES
    error(session.post(url, data=b"{", headers={"Content-Type": "application/json"}), 400, "VALIDATION_ERROR")
    error(session.post(url, json={"user_id": user_id(1)}), 400, "VALIDATION_ERROR")
    error(api_session("wrong").get(url), 401, "AUTHENTICATION_ERROR")
    error(session.get(url + "/999999999999"), 404, "DOES_NOT_EXIST")
    error(session.get(f"{sandbox.url}/api/v1/operations/{uuid.uuid4()}"), 404, "DOES_NOT_EXIST")
    error(session.get(f"{sandbox.url}/api/v1/operations", params={"limit": 501}), 400, "VALIDATION_ERROR")
    error(api_session("wrong").get(f"{sandbox.url}/api/v1/operations"), 401, "AUTHENTICATION_ERROR")
    op_id = str(uuid.uuid4())
    assert session.post(url, params={"async_mode": "true", "operation_id": op_id}, json=[bonus(1)]).status_code == 201
    error(session.post(url, params={"async_mode": "true", "operation_id": op_id}, json=[bonus(1)]),
          409, "OPERATION_ALREADY_EXISTS")
    conflict = error(session.post(url, json=[bonus(5), bonus(5)]), 409, "ENTITY_CONFLICT")
    assert conflict["payload"]["user_id"]["code"] == "ENTITY_CONFLICT"
    error(session.post(url, json=[bonus(n) for n in range(101)]), 413, "TOO_MANY_ITEMS")
    set_faults(sandbox.url, "http_429=1")
    limited = error(session.get(url), 429, "TOO_MANY_REQUESTS")
    assert limited["payload"]["interval"] == "MIN"
    set_faults(sandbox.url, "http_500=1")
    error(session.get(url), 500, "INTERNAL_ERROR")
    set_faults(sandbox.url, "http_503=1")
    error(session.get(url), 503, "REMOTE_SERVICE_UNAVAILABLE")


def test_daily_quota_429_envelope(tmp_path):
    with SandboxServer(tmp_path / "q.sqlite", token=TOKEN, daily_quota=1) as server:
        session = api_session()
        assert session.post(server.url + BONUSES, json=bonus(1)).status_code == 201
        body = error(session.post(server.url + BONUSES, json=bonus(2)), 429, "TOO_MANY_REQUESTS")
        assert body["payload"] == {"interval": "DAY", "limit": 1}


def _wire_items() -> list[dict[str, Any]]:
    """What the pipeline POSTs for a small sheet: ingest frame -> validate -> keys -> wire (as pipeline.run)."""
    from sheet_factory import canonical_frame, row

    rows = [
        row(1),
        row(2, amount="0.01", private_comment=None, assignment_id=None,
            public_title='{"EN": "Hi", "RU": "Привет"}'),
        row(3, amount="100", without_message="true", public_title=None, public_message=None),
        row(4, amount="abc"),  # invalid: must not reach the wire
    ]
    checked, errors = validate.validate_rows(canonical_frame(rows), validate.ValidationRules())
    keyed = keys.assign_row_keys(checked, "batch-openapi")
    valid = keyed[keyed["is_valid"]]
    assert len(valid) == 3 and len(errors) >= 1
    body = wire.body_for(list(zip(valid["row_key"], wire.build_items(valid))))
    return json.loads(body)


def test_pipeline_wire_items_conform_to_user_bonus_form(sandbox):
    items = _wire_items()
    for item in items:
        conforms("UserBonusFormV1", item)  # `__item_idx` is an extra key; the schema allows extra keys
    assert items[2]["without_message"] is True and "public_title" not in items[2]
    # ...and the sandbox accepts them exactly as sent.
    page = api_session().post(sandbox.url + BONUSES, json=items)
    assert page.status_code == 201 and "validation_errors" not in page.json()
    conforms(_STRICT_PAGE, page.json())


def test_a_nonconforming_answer_is_caught():
    """The checks have teeth: a zone suffix, a missing id, a numeric id and a bad status all fail."""
    good = {"user_id": user_id(1), "amount": 1.5, "without_message": True, "id": "100000000001",
            "created": "2024-01-02T03:04:05.678"}
    conforms(_STRICT_VIEW, good)
    for broken in ({**good, "created": "2024-01-02T03:04:05Z"}, {**good, "id": 100000000001},
                   {k: v for k, v in good.items() if k != "id"}, {**good, "amount": 0.001}):
        with pytest.raises(AssertionError):
            conforms(_STRICT_VIEW, broken)
    with pytest.raises(AssertionError):
        conforms("OperationViewV1", {"id": "x", "status": "DONE"})
    for page in ({"items": [{"id": "x", "status": "DONE"}], "has_more": False}, {"items": []}):
        with pytest.raises(AssertionError):
            conforms(_STRICT_OPERATIONS, page)
