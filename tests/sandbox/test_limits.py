"""Auth, rate limit and the daily POST quota, over real HTTP."""
from __future__ import annotations

from datetime import UTC, datetime

import requests
from sandbox_fixtures import TOKEN, api_session, bonus, stats

from pipeline.sandbox import SandboxServer

BONUSES = "/api/v1/user-bonuses"


def test_oauth_and_apikey_are_accepted_anything_else_is_401(sandbox):
    assert requests.get(sandbox.url + BONUSES, headers={"Authorization": f"OAuth {TOKEN}"}).status_code == 200
    assert requests.get(sandbox.url + BONUSES, headers={"Authorization": f"ApiKey {TOKEN}"}).status_code == 200
    for headers in ({}, {"Authorization": "OAuth wrong"}, {"Authorization": f"Bearer {TOKEN}"}):
        response = requests.get(sandbox.url + BONUSES, headers=headers)
        assert response.status_code == 401
        body = response.json()
        assert body["code"] == "AUTHENTICATION_ERROR" and body["request_id"] and body["message"]


def test_unknown_route_uses_the_error_envelope(sandbox):
    response = api_session().get(sandbox.url + "/api/v1/nothing")
    assert response.status_code == 404 and response.json()["code"] == "DOES_NOT_EXIST"


def test_rate_limit_answers_429_with_retry_after(tmp_path):
    with SandboxServer(tmp_path / "db", token=TOKEN, rate_limit=5) as srv:
        session = api_session()
        answers = [session.get(srv.url + BONUSES) for _ in range(20)]
    limited = [r for r in answers if r.status_code == 429]
    assert limited, "20 quick requests must pass a limit of 5 per second"
    assert limited[0].headers["Retry-After"] == "1" and limited[0].json()["code"] == "TOO_MANY_REQUESTS"


def test_daily_quota_answers_429_day_until_utc_midnight(tmp_path):
    with SandboxServer(tmp_path / "db", token=TOKEN, daily_quota=2) as srv:
        session = api_session()
        answers = [session.post(srv.url + BONUSES, json=bonus(i)) for i in range(3)]
        counters = stats(srv.url)
    assert [r.status_code for r in answers] == [201, 201, 429]
    body = answers[2].json()
    assert body["code"] == "TOO_MANY_REQUESTS" and body["payload"]["interval"] == "DAY"
    now = datetime.now(UTC)
    to_midnight = 86400 - (now.hour * 3600 + now.minute * 60 + now.second)
    assert abs(int(answers[2].headers["Retry-After"]) - to_midnight) <= 5
    assert counters["bonuses_total"] == 2 and counters["statuses"]["429"] == 1


def test_amount_limits_are_configurable(tmp_path):
    with SandboxServer(tmp_path / "db", token=TOKEN, min_amount="0.01", max_amount="5") as srv:
        session = api_session()
        low = session.post(srv.url + BONUSES, json=bonus(1, amount=0.005))
        high = session.post(srv.url + BONUSES, json=bonus(1, amount=5.01))
        edge = session.post(srv.url + BONUSES, json=[bonus(1, amount=0.01), bonus(2, amount=5)])
    assert low.json()["payload"]["amount"]["code"] == "VALUE_LESS_THAN_MIN"
    assert high.json()["payload"]["amount"]["code"] == "VALUE_GREATER_THAN_MAX"
    assert edge.status_code == 201
