"""Injected faults over real HTTP: errors before processing, 429 bursts, reset after commit, latency, admin."""
from __future__ import annotations

import uuid

import pytest
import requests
from sandbox_fixtures import ADMIN, TOKEN, api_session, bonus, set_faults, stats, wait_operation

from pipeline.sandbox import FaultSpec, SandboxServer

BONUSES = "/api/v1/user-bonuses"


@pytest.mark.parametrize(("spec", "status", "code"), [
    ("http_500=1", 500, "INTERNAL_ERROR"),
    ("http_503=1", 503, "REMOTE_SERVICE_UNAVAILABLE"),
    ("http_429=1", 429, "TOO_MANY_REQUESTS"),
])
def test_error_faults_fire_before_processing(sandbox, spec, status, code):
    set_faults(sandbox.url, spec)
    response = api_session().post(sandbox.url + BONUSES, json=bonus())
    assert response.status_code == status and response.json()["code"] == code
    set_faults(sandbox.url, "")
    assert api_session().get(sandbox.url + BONUSES).json()["items"] == []
    assert stats(sandbox.url)["faults"] == {spec.split("=")[0]: 1}


def test_429_fault_comes_in_bursts_with_retry_after(sandbox):
    set_faults(sandbox.url, "http_429=1,burst_429=3")
    response = api_session().get(sandbox.url + BONUSES)
    assert response.headers["Retry-After"] == "1" and response.json()["payload"]["interval"] == "MIN"
    set_faults(sandbox.url, "http_429=0,burst_429=3")
    assert api_session().get(sandbox.url + BONUSES).status_code == 200


def test_sync_reset_after_commit_pays_but_client_gets_no_answer(sandbox):
    set_faults(sandbox.url, "reset_after_commit=1")
    with pytest.raises(requests.ConnectionError):
        api_session().post(sandbox.url + BONUSES, json=[bonus(1), bonus(2)])
    set_faults(sandbox.url, "")
    assert len(api_session().get(sandbox.url + BONUSES).json()["items"]) == 2
    assert stats(sandbox.url)["faults"]["reset_after_commit"] == 1


def test_async_reset_after_commit_persists_the_operation_that_pays(sandbox):
    session = api_session()
    set_faults(sandbox.url, "reset_after_commit=1")
    op_id = str(uuid.uuid4())
    params = {"async_mode": "true", "operation_id": op_id}
    with pytest.raises(requests.ConnectionError):
        session.post(sandbox.url + BONUSES, params=params, json=[bonus(1), bonus(2)])
    set_faults(sandbox.url, "")
    again = session.post(sandbox.url + BONUSES, params=params, json=[bonus(1), bonus(2)])
    assert again.status_code == 409 and again.json()["code"] == "OPERATION_ALREADY_EXISTS"
    assert wait_operation(session, sandbox.url, op_id)["details"]["success_count"] == 2
    assert len(session.get(sandbox.url + BONUSES).json()["items"]) == 2


def test_faults_are_reproducible_from_the_seed(tmp_path):
    def statuses(seed: int) -> list[int]:
        with SandboxServer(tmp_path / f"db{seed}-{uuid.uuid4()}", token=TOKEN, faults="http_500=0.3,http_503=0.2",
                           seed=seed) as srv:
            session = api_session()
            return [session.get(srv.url + BONUSES).status_code for _ in range(40)]

    assert statuses(7) == statuses(7)
    assert statuses(7) != statuses(8)
    assert {500, 503, 200} <= set(statuses(7))


def test_latency_fault_delays_answers(sandbox):
    set_faults(sandbox.url, "latency_ms=50")
    response = api_session().get(sandbox.url + BONUSES)
    assert response.status_code == 200 and response.elapsed.total_seconds() >= 0.05


def test_admin_faults_endpoint_reads_and_rejects_bad_specs(sandbox):
    assert set_faults(sandbox.url, "http_500=0.1,latency_ms=20", seed=3) == {"spec": "http_500=0.1,latency_ms=20", "seed": 3}
    assert requests.get(sandbox.url + "/_sandbox/faults", headers=ADMIN).json()["seed"] == 3
    bad = requests.post(sandbox.url + "/_sandbox/faults", json={"spec": "http_999=1"}, headers=ADMIN)
    assert bad.status_code == 400 and "unknown fault" in bad.json()["error"]
    assert requests.post(sandbox.url + "/_sandbox/faults", json={"spec": "http_500=2"}, headers=ADMIN).status_code == 400


def test_stats_count_requests_statuses_bonuses_and_operations(sandbox):
    session = api_session()
    session.post(sandbox.url + BONUSES, json=[bonus(1)])
    op = session.post(sandbox.url + BONUSES, params={"async_mode": "true"}, json=[bonus(2), bonus(3)]).json()
    wait_operation(session, sandbox.url, op["id"])
    counters = stats(sandbox.url)
    assert counters["requests"]["POST /api/v1/user-bonuses"] == 2
    assert counters["statuses"]["201"] == 2
    assert counters["bonuses_created"] == counters["bonuses_total"] == 3
    assert counters["operations"] == {"SUCCESS": 1}


def test_fault_spec_parses_the_documented_example():
    spec = FaultSpec.parse("http_500=0.1,http_429=0.05,reset_after_commit=0.05,latency_ms=20,op_fail=0.01")
    assert (spec.http_500, spec.http_429, spec.reset_after_commit, spec.latency_ms, spec.op_fail) == (0.1, 0.05, 0.05, 20, 0.01)
    with pytest.raises(ValueError):
        FaultSpec.parse("latency_ms")
