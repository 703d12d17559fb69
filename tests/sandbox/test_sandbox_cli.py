"""`payout sandbox` flags: parsing, the token rule, bad values."""
from __future__ import annotations

import argparse

from pipeline.sandbox.cli import add_arguments, main


def test_flags_mount_on_a_parent_parser(tmp_path):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--db", str(tmp_path / "db"), "--faults", "http_500=0.1", "--seed", "7",
                              "--rate-limit", "5", "--daily-quota", "3", "--max-async-items", "9",
                              "--min-amount", "0.01", "--max-amount", "50"])
    assert (args.host, args.port, args.seed, args.rate_limit, args.daily_quota) == ("127.0.0.1", 8000, 7, 5, 3)


def test_missing_token_is_a_usage_error(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("TOLOKA_TOKEN", raising=False)
    assert main(["--db", str(tmp_path / "db")]) == 2
    assert "TOLOKA_TOKEN" in capsys.readouterr().err


def test_bad_fault_spec_is_a_usage_error(tmp_path, capsys):
    assert main(["--db", str(tmp_path / "db"), "--token", "t", "--faults", "http_777=1"]) == 2
    assert "unknown fault" in capsys.readouterr().err


def test_missing_unknown_users_file_is_a_usage_error(tmp_path):
    missing = tmp_path / "absent.txt"
    assert main(["--db", str(tmp_path / "db"), "--token", "t", "--unknown-users", str(missing)]) == 2
