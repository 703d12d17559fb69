from __future__ import annotations

import io
import json

import pytest
import structlog
from structlog.testing import capture_logs

from pipeline.logs import configure_logging, redact_secrets, set_secret


@pytest.fixture(autouse=True)
def _clean_context():
    structlog.contextvars.clear_contextvars()
    yield
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()


def _json_lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_non_tty_stream_gets_one_json_object_per_line_with_utc_time_level_and_context():
    out = io.StringIO()
    configure_logging(stream=out)
    structlog.contextvars.bind_contextvars(run_id="20261125T101500Z", stage="submit")
    log = structlog.get_logger()
    log.info("chunk submitted", chunk_no=3)
    log.debug("hidden at info level")
    [line] = _json_lines(out)
    assert line["event"] == "chunk submitted" and line["level"] == "info" and line["chunk_no"] == 3
    assert line["run_id"] == "20261125T101500Z" and line["stage"] == "submit"
    assert line["timestamp"].endswith("Z") and "T" in line["timestamp"]


def test_json_lines_keep_non_latin_text_readable():
    """A Russian header in an error must read as written in a scheduler's log, not as \\u0418 escapes."""
    out = io.StringIO()
    configure_logging(stream=out)
    structlog.get_logger().error("error", message="required column 'Сумма' missing")
    assert "'Сумма'" in out.getvalue() and _json_lines(out)[0]["message"] == "required column 'Сумма' missing"


def test_context_bound_in_contextvars_appears_on_every_captured_event():
    configure_logging(stream=io.StringIO())
    structlog.contextvars.bind_contextvars(run_id="r1", stage="poll")
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as events:
        structlog.get_logger().warning("slow operation", operation_id="op")
        structlog.get_logger().info("done")
    assert [(e["event"], e["log_level"], e["run_id"], e["stage"]) for e in events] == [
        ("slow operation", "warning", "r1", "poll"),
        ("done", "info", "r1", "poll"),
    ]


def test_token_is_redacted_everywhere_in_json_output():
    token = "AQAD-secret-token-123"
    set_secret(token)
    out = io.StringIO()
    configure_logging(json=True, level="debug", stream=out)
    log = structlog.get_logger()
    log.debug(f"header Authorization: OAuth {token}", headers={"Authorization": f"OAuth {token}"}, args=[token, 1])
    log.error("request failed", error=RuntimeError(f"bad token {token}"))
    try:
        raise ValueError(f"refused {token}")
    except ValueError:
        log.exception("crash")
    text = out.getvalue()
    assert token not in text
    first, second, third = _json_lines(out)
    assert first["event"] == "header Authorization: OAuth ***"
    assert first["headers"] == {"Authorization": "OAuth ***"} and first["args"] == ["***", 1]
    assert second["error"] == "RuntimeError: bad token ***"
    assert "refused ***" in third["exception"]


def test_redaction_processor_leaves_events_without_secrets_untouched():
    set_secret("zzz-never-logged")
    event = {"event": "paid", "rows": 3, "amount": "1.50", "obj": object}
    assert redact_secrets(None, "info", dict(event)) == event


def test_console_renderer_on_tty_and_json_when_forced():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    configure_logging(stream=tty)
    structlog.get_logger().info("hello", rows=2)
    assert "hello" in tty.getvalue() and not tty.getvalue().startswith("{")

    forced = Tty()
    configure_logging(json=True, stream=forced)
    structlog.get_logger().info("hello")
    assert _json_lines(forced)[0]["event"] == "hello"


def test_unknown_level_is_refused():
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging(level="chatty", stream=io.StringIO())
