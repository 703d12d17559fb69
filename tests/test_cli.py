"""The command line as a user meets it: help, usage errors, and the token rules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sheet_factory import row, write_csv

from pipeline.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_python_dash_m_pipeline_explains_commands_and_exit_codes() -> None:
    out = subprocess.run([sys.executable, "-m", "pipeline", "--help"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0
    for word in ("run", "retry", "audit", "sandbox", "exit codes", "ledger lock"):
        assert word in out.stdout


@pytest.mark.parametrize("env", ["sandbox", "production"])
def test_real_targets_need_the_token_from_the_environment(env, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("TOLOKA_TOKEN", raising=False)
    sheet = write_csv(tmp_path / "p.csv", [row(1)])
    code = main(["run", str(sheet), "--env", env, "--ledger", str(tmp_path / "l.sqlite"), "--out", str(tmp_path)])
    assert code == 2
    assert "TOLOKA_TOKEN" in capsys.readouterr().err


def test_bad_chunk_size_is_a_usage_error(tmp_path, capsys) -> None:
    sheet = write_csv(tmp_path / "p.csv", [row(1)])
    assert main(["run", str(sheet), "--chunk-size", "0", "--dry-run"]) == 2
    assert "chunk_size" in capsys.readouterr().err


def test_bad_config_file_is_a_usage_error(tmp_path, capsys) -> None:
    sheet = write_csv(tmp_path / "p.csv", [row(1)])
    config = tmp_path / "c.toml"
    config.write_text("chunk_sise = 10\n")
    assert main(["run", str(sheet), "--config", str(config), "--dry-run"]) == 2
    assert "chunk_sise" in capsys.readouterr().err


def test_default_local_env_runs_with_an_embedded_sandbox_and_no_token(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("TOLOKA_TOKEN", raising=False)
    sheet = write_csv(tmp_path / "p.csv", [row(i) for i in range(3)])
    code = main(["run", str(sheet), "--ledger", str(tmp_path / "l.sqlite"), "--out", str(tmp_path / "r")])
    assert code == 0
    assert (tmp_path / "sandbox.sqlite").exists()  # the embedded server's state sits beside the ledger
    assert "Paid" in capsys.readouterr().out
