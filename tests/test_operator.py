"""Issue 10, the operator's night: logs a scheduler can read, exit codes with their own messages, counts that
mean one thing. Every `payout` here runs against the sandbox over real HTTP, with stderr off a terminal."""

from __future__ import annotations

import json
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
    for command in ("run", "retry", "audit", "recover", "sandbox", "status"):
        out = subprocess.run([sys.executable, "-m", "pipeline", command, "--help"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parents[1])
        assert out.returncode == 0 and "example:" in out.stdout, (command, out.stderr)


@pytest.mark.parametrize("where", ["before", "after"])
def test_log_flags_before_or_after_the_command(where: str) -> None:
    from pipeline.cli import build_parser

    flags = ["--log-json", "--quiet"]
    argv = [*flags, "retry"] if where == "before" else ["retry", *flags]
    args = build_parser().parse_args(argv)
    assert args.log_json and args.quiet and not args.verbose
    assert not build_parser().parse_args(["retry"]).log_json
