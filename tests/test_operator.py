"""Issue 10, the operator's night: logs a scheduler can read, exit codes with their own messages, counts that
mean one thing. Every `payout` here runs against the sandbox over real HTTP, with stderr off a terminal."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from payout_helpers import payout_process
from sandbox_fixtures import TOKEN
from sheet_factory import row, write_csv

from pipeline import progress
from pipeline.cli import main


def events(err: str) -> list[dict]:
    """Every non-empty stderr line as JSON: fails loudly if one is plain text."""
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def summary_of(out: Path) -> dict:
    return json.loads(sorted(out.glob("*/summary.json"))[-1].read_text())


def test_every_stderr_line_is_json_with_run_and_batch_ids_and_progress_events(sandbox, tmp_path, monkeypatch,
                                                                              capsys) -> None:
    monkeypatch.setenv("TOLOKA_TOKEN", TOKEN)
    monkeypatch.setattr(progress, "EVENT_INTERVAL_S", 0.0)  # every progress report becomes an event
    sheet = write_csv(tmp_path / "p.csv", [row(i) for i in range(20)] + [row(99, amount="x")])
    # --log-json after the subcommand is accepted too (off a terminal it is the default anyway)
    code = main(["run", str(sheet), "--api-url", sandbox.url, "--batch-id", "b1", "--chunk-size", "5",
                 "--out", str(tmp_path / "r"), "--ledger", str(tmp_path / "l.sqlite"), "--log-json"])
    assert code == 1  # one invalid row
    logged = events(capsys.readouterr().err)
    assert logged and all("run_id" in e and "batch_id" in e for e in logged)
    run_events = [e for e in logged if e["event"] not in ("data_dir",)]
    assert all(e["batch_id"] == "b1" and e["run_id"] for e in run_events), run_events
    steps = [e for e in logged if e["event"] == "progress"]
    assert steps[0]["rows_planned"] == 20 and steps[-1]["rows_done"] == 20 and steps[-1]["rows_sent"] == 20
    assert len(steps) >= 3  # start, during, end


def test_quiet_logs_only_warnings_and_errors(sandbox, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("TOLOKA_TOKEN", TOKEN)
    sheet = write_csv(tmp_path / "p.csv", [row(i) for i in range(3)])
    assert main(["run", str(sheet), "--api-url", sandbox.url, "--batch-id", "q", "--quiet",
                 "--out", str(tmp_path / "r"), "--ledger", str(tmp_path / "l.sqlite")]) == 0
    assert [e for e in events(capsys.readouterr().err) if e["level"] not in ("warning", "error")] == []


def test_a_refused_token_says_fix_the_token_and_exits_3(sandbox, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("TOLOKA_TOKEN", "wrong-token-value")
    sheet = write_csv(tmp_path / "p.csv", [row(i) for i in range(3)])
    out = tmp_path / "r"
    code = main(["run", str(sheet), "--api-url", sandbox.url, "--batch-id", "t", "--out", str(out),
                 "--ledger", str(tmp_path / "l.sqlite")])
    assert code == 3
    captured = capsys.readouterr()
    [stopped] = [e for e in events(captured.err) if e["event"] == "stopped_early"]
    assert stopped["exit_code"] == 3 and "fix TOLOKA_TOKEN" in stopped["next_step"]
    assert stopped["run_id"] and stopped["batch_id"] == "t"
    summary = summary_of(out)
    assert "fix TOLOKA_TOKEN" in summary["next_step"]
    assert "fix TOLOKA_TOKEN" in captured.out and "run `payout run` again" not in captured.out


def test_retry_with_a_refused_token_exits_3_even_with_nothing_to_resend(sandbox, tmp_path, monkeypatch,
                                                                         capsys) -> None:
    monkeypatch.setenv("TOLOKA_TOKEN", "wrong-token-value")
    code = main(["retry", "--api-url", sandbox.url, "--out", str(tmp_path / "r"),
                 "--ledger", str(tmp_path / "l.sqlite")])
    assert code == 3
    [error] = [e for e in events(capsys.readouterr().err) if e["event"] == "error"]
    assert error["error"] == "AuthRefused" and "fix TOLOKA_TOKEN" in error["next_step"]
    assert "wrong-token-value" not in json.dumps(error)


def test_retry_with_a_good_token_and_nothing_to_resend_exits_0(sandbox, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TOLOKA_TOKEN", TOKEN)
    assert main(["retry", "--api-url", sandbox.url, "--out", str(tmp_path / "r"),
                 "--ledger", str(tmp_path / "l.sqlite")]) == 0


def test_failed_count_is_what_the_server_refused_and_invalid_rows_count_apart(sandbox, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TOLOKA_TOKEN", TOKEN)
    rows = [row(i) for i in range(4)] + [row(50, amount="-1"), row(51, amount="abc"), dict(row(1))]
    sheet = write_csv(tmp_path / "p.csv", rows)
    out = tmp_path / "r"
    assert main(["run", str(sheet), "--api-url", sandbox.url, "--batch-id", "c", "--out", str(out),
                 "--ledger", str(tmp_path / "l.sqlite")]) == 1
    summary = summary_of(out)
    assert summary["success_count"] == summary["counts"]["paid"] == 4
    assert summary["failed_count"] == summary["counts"]["failed"] == 0 and summary["amount_failed"] == "0.00"
    assert summary["invalid_count"] == 2 and summary["duplicate_count"] == 1


def test_a_usage_error_in_a_real_process_is_one_json_line(tmp_path) -> None:
    proc = payout_process("run", str(tmp_path / "missing.csv"), output=subprocess.PIPE)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    [error] = events(out.decode())
    assert error["event"] == "error" and "missing.csv" in error["message"] and error["run_id"] is None


def test_every_command_help_has_an_example() -> None:
    for command in ("run", "retry", "audit", "recover", "sandbox", "status", None):
        argv = [sys.executable, "-m", "pipeline", *([command] if command else []), "--help"]
        out = subprocess.run(argv, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
        assert out.returncode == 0 and re.search(r"^examples?:\n  \S", out.stdout, re.M), (command, out.stdout)


@pytest.mark.parametrize("where", ["before", "after"])
def test_log_flags_before_or_after_the_command(where: str) -> None:
    from pipeline.cli import build_parser

    flags = ["--log-json", "--quiet"]
    argv = [*flags, "retry"] if where == "before" else ["retry", *flags]
    args = build_parser().parse_args(argv)
    assert args.log_json and args.quiet and not args.verbose
    assert not build_parser().parse_args(["retry"]).log_json


# -- payout status -----------------------------------------------------------------------------------------------


def _run(sandbox_url: str, tmp_path: Path, sheet: Path, *extra: str) -> int:
    return main(["run", str(sheet), "--api-url", sandbox_url, "--out", str(tmp_path / "r"),
                 "--ledger", str(tmp_path / "l.sqlite"), *extra])


def _status(tmp_path: Path, capsys, *extra: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["status", "--ledger", str(tmp_path / "l.sqlite"), "--out", str(tmp_path / "r"), *extra])
    return code, capsys.readouterr().out


def test_status_names_the_last_runs_their_counts_and_the_next_step(sandbox, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("TOLOKA_TOKEN", TOKEN)
    sheet = write_csv(tmp_path / "p.csv", [row(i) for i in range(5)] + [row(50, amount="-1"), row(51, amount="x")])
    assert _run(sandbox.url, tmp_path, sheet, "--batch-id", "nightly-1") == 1
    code, text = _status(tmp_path, capsys)
    assert code == 0
    assert "batch nightly-1" in text and str(sheet) in text and "paid 5" in text and "invalid 2" in text
    assert "fix rows 7, 8 of p.csv and re-run" in text and "$" in text
    code, out = _status(tmp_path, capsys, "--json")
    doc = json.loads(out)
    [run] = doc["runs"]
    assert doc["target"] == sandbox.url and doc["open_operations"] == 0
    assert run["counts"] == {"paid": 5, "invalid": 2} and run["ledger_rows"] == {"paid": 5}
    assert run["finished"] and run["sheets"] == [str(sheet)] and run["operations"] == {"done": 1}
    # the same run by id; a fixed sheet then leaves nothing to do
    assert _status(tmp_path, capsys, run["run_id"], "--json")[1] == out
    write_csv(sheet, [row(i) for i in range(5)])
    assert _run(sandbox.url, tmp_path, sheet, "--batch-id", "nightly-1") == 0
    latest = json.loads(_status(tmp_path, capsys, "--json")[1])["runs"][0]
    assert latest["next_step"].startswith("nothing to do") and latest["counts"] == {"already_paid": 5}


def test_status_of_a_run_killed_before_its_report_and_the_next_run_says_so(sandbox, tmp_path, monkeypatch,
                                                                            capsys) -> None:
    from pipeline.ledger import Ledger

    with Ledger(tmp_path / "l.sqlite") as ledger:  # what a SIGKILL after start_run leaves behind
        ledger.start_run("20261130T020000.000000Z-dead", "b", "run", {"sheets": ["s.csv"], "env": "local"},
                         sheet_rows=10, to_plan=10)
    code, text = _status(tmp_path, capsys)
    assert code == 0 and "did not finish" in text and "run the same command again" in text
    assert "ledger (no report)" in text
    monkeypatch.setenv("TOLOKA_TOKEN", TOKEN)
    assert main(["retry", "--api-url", sandbox.url, "--out", str(tmp_path / "r"),
                 "--ledger", str(tmp_path / "l.sqlite")]) == 1  # (the killed run's rows were never planned)
    [warning] = [e for e in events(capsys.readouterr().err) if e["event"] == "previous_run_unfinished"]
    assert warning["unfinished_run_id"] == "20261130T020000.000000Z-dead" and warning["level"] == "warning"


def test_status_of_an_unknown_run_is_exit_2_and_of_no_ledger_creates_none(tmp_path, capsys) -> None:
    code, text = _status(tmp_path, capsys)
    assert code == 0 and "No runs" in text and not (tmp_path / "l.sqlite").exists()
    assert _status(tmp_path, capsys, "nope")[0] == 2


# -- --lock-timeout ----------------------------------------------------------------------------------------------


def test_lock_timeout_waits_for_the_other_run(sandbox, tmp_path, monkeypatch, capsys) -> None:
    import pipeline.cli as cli
    from pipeline.ledger import Ledger

    monkeypatch.setenv("TOLOKA_TOKEN", TOKEN)
    sheet = write_csv(tmp_path / "p.csv", [row(i) for i in range(3)])
    other = Ledger(tmp_path / "l.sqlite").__enter__()  # another run holds the real lock
    try:
        assert _run(sandbox.url, tmp_path, sheet, "--batch-id", "w") == 4  # default: no waiting
        waits: list[float] = []

        def other_run_finishes(seconds: float) -> None:  # instead of sleeping: the holder lets go
            waits.append(seconds)
            other.__exit__()

        monkeypatch.setattr(cli, "_sleep", other_run_finishes)
        assert _run(sandbox.url, tmp_path, sheet, "--batch-id", "w", "--lock-timeout", "600") == 0
        assert len(waits) == 1
        assert any(e["event"] == "waiting_for_lock" for e in events(capsys.readouterr().err))
    finally:
        other.__exit__()
