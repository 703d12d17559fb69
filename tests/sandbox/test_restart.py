"""A real `python -m pipeline.sandbox` process: state (the daily quota count too) survives restarts, and a killed
operation ends consistently."""
from __future__ import annotations

import signal
import sqlite3
import uuid
from datetime import UTC, datetime

import pytest
import requests
from sandbox_fixtures import SandboxProcess, api_session, bonus, operation, set_faults, stats, wait_operation
from waiting import wait_for

BONUSES = "/api/v1/user-bonuses"


def test_bonuses_and_operations_survive_a_restart(sandbox_process):
    session = api_session()
    url = sandbox_process.url
    created = session.post(url + BONUSES, json=bonus(1)).json()
    op = session.post(url + BONUSES, params={"async_mode": "true"}, json=[bonus(2)]).json()
    wait_operation(session, url, op["id"])
    assert sandbox_process.kill(signal.SIGTERM) == 0
    sandbox_process.start()
    assert session.get(f"{url}{BONUSES}/{created['id']}").json() == created
    assert session.get(f"{url}/api/v1/operations/{op['id']}").json()["status"] == "SUCCESS"
    second = session.post(url + BONUSES, json=bonus(3)).json()
    assert int(second["id"]) == int(created["id"]) + 2


def test_operation_killed_in_flight_finishes_exactly_once_after_restart(tmp_path):
    with SandboxProcess(tmp_path / "sandbox.sqlite", "--faults", "slow_op_ms=1500") as process:
        session = api_session()
        op_id = str(uuid.uuid4())
        items = [bonus(i) for i in range(50)]
        submitted = session.post(process.url + BONUSES, params={"async_mode": "true", "operation_id": op_id}, json=items)
        assert submitted.status_code == 201
        wait_for(lambda: operation(session, process.url, op_id)["status"] == "RUNNING", "the operation to run", 10)
        process.kill(signal.SIGKILL)
        process.start()
        set_faults(process.url, "")  # the resumed operation already waits out its own slow_op_ms
        done = wait_operation(session, process.url, op_id)
        bonuses = session.get(process.url + BONUSES, params={"limit": 300}).json()["items"]
        assert done["status"] == "SUCCESS" and done["details"]["success_count"] == 50
        assert sorted(b["user_id"] for b in bonuses) == sorted(item["user_id"] for item in items)
        again = session.post(process.url + BONUSES, params={"async_mode": "true", "operation_id": op_id}, json=items)
        assert again.status_code == 409
        assert stats(process.url)["bonuses_total"] == 50


def test_daily_quota_count_survives_a_restart(tmp_path):
    day = datetime.now(UTC).date().isoformat()
    with SandboxProcess(tmp_path / "sandbox.sqlite", "--daily-quota", "3") as process:
        session = api_session()

        def post(item: dict) -> requests.Response:
            return session.post(process.url + BONUSES, json=item)

        answers = [post(bonus(1)), post({"user_id": "nobody"})]  # a refused POST still counts, as at Toloka
        process.restart()  # SIGKILL: only what is in the db survives
        answers += [post(bonus(2)), post(bonus(3)), post(bonus(4))]
    if datetime.now(UTC).date().isoformat() != day:
        pytest.skip("crossed UTC midnight: a new day has a new quota")
    assert [answer.status_code for answer in answers] == [201, 400, 201, 429, 429]
    assert answers[-1].json()["payload"] == {"interval": "DAY", "limit": 3}
    with sqlite3.connect(tmp_path / "sandbox.sqlite") as conn:  # the 429s were not counted
        assert conn.execute("SELECT day, used FROM quota").fetchall() == [(day, 3)]
