"""The command line as a user meets it: help, usage errors, the token rules, the data dir and batch ids."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import types
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sandbox_fixtures import TOKEN
from sheet_factory import row, write_csv

from pipeline import config, logs
from pipeline.cli import build_parser, main, settings_from

REPO = Path(__file__).resolve().parents[1]


def summaries(reports: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(reports.glob("*/summary.json"))]


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


def events(err: str) -> list[dict]:
    """Off a terminal (as under pytest) every stderr line is one JSON object: parse them all (fails otherwise)."""
    return [json.loads(line) for line in error_lines(err)]


def test_python_dash_m_pipeline_explains_commands_and_exit_codes() -> None:
    out = subprocess.run([sys.executable, "-m", "pipeline", "--help"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0
    for word in ("run", "retry", "audit", "sandbox", "recover", "exit codes", "ledger lock", "--data-dir",
                 "PAYOUT_DATA_DIR"):
        assert word in out.stdout


def test_run_help_explains_batch_ids_data_dir_and_the_new_flags(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    for word in ("--batch-id", "sender_batch_id", "batch_id_template", "--data-dir", "--allow-repeats",
                 "--max-wait", "never falls back"):
        assert word in out


@pytest.mark.parametrize("env", ["sandbox", "production"])
def test_real_targets_need_the_token_from_the_environment(env, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("TOLOKA_TOKEN", raising=False)
    sheet = write_csv(tmp_path / "p.csv", [row(1)])
    code = main(["run", str(sheet), "--env", env, "--ledger", str(tmp_path / "l.sqlite"), "--out", str(tmp_path)])
    assert code == 2
    assert "TOLOKA_TOKEN" in capsys.readouterr().err
    assert not (tmp_path / "l.sqlite").exists()


def test_production_needs_a_batch_id_and_says_why_before_touching_anything(
        tmp_path, monkeypatch, capsys, hermetic_data_dir) -> None:
    monkeypatch.setenv("TOLOKA_TOKEN", "t")
    sheet = write_csv(tmp_path / "payouts.csv", [row(1)])
    assert main(["run", str(sheet), "--env", "production"]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "needs --batch-id" in lines[0] and "--batch-id payouts-" in lines[0]
    assert not hermetic_data_dir.exists()


def test_api_url_needs_a_batch_id_too_even_for_a_dry_run(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("TOLOKA_TOKEN", "t")
    sheet = write_csv(tmp_path / "p.csv", [row(1)])
    assert main(["run", str(sheet), "--api-url", "http://127.0.0.1:9", "--dry-run"]) == 2
    assert "needs --batch-id" in capsys.readouterr().err


def test_bad_batch_id_is_a_usage_error(tmp_path, capsys) -> None:
    sheet = write_csv(tmp_path / "p.csv", [row(1)])
    assert main(["run", str(sheet), "--batch-id", "a\tb", "--dry-run"]) == 2
    assert "printable" in capsys.readouterr().err


def test_bad_chunk_size_is_a_usage_error(tmp_path, capsys) -> None:
    sheet = write_csv(tmp_path / "p.csv", [row(1)])
    assert main(["run", str(sheet), "--chunk-size", "0", "--dry-run"]) == 2
    assert "chunk_size" in capsys.readouterr().err


def test_bad_config_file_is_a_usage_error(tmp_path, capsys) -> None:
    sheet = write_csv(tmp_path / "p.csv", [row(1)])
    config_file = tmp_path / "c.toml"
    config_file.write_text("chunk_sise = 10\n")
    assert main(["run", str(sheet), "--config", str(config_file), "--dry-run"]) == 2
    assert "chunk_sise" in capsys.readouterr().err


def test_production_without_api_url_exits_2_and_never_starts_the_embedded_sandbox(
        tmp_path, monkeypatch, capsys, hermetic_data_dir) -> None:
    real = config._packaged_config
    monkeypatch.setattr(config, "_packaged_config", lambda env: {} if env == "production" else real(env))
    monkeypatch.setenv("TOLOKA_TOKEN", "t")
    sheet = write_csv(tmp_path / "p.csv", [row(1)])
    assert main(["run", str(sheet), "--env", "production", "--batch-id", "b"]) == 2
    assert "never falls back to the embedded sandbox" in capsys.readouterr().err
    assert not hermetic_data_dir.exists()


def test_default_local_env_runs_with_an_embedded_sandbox_and_no_token(
        tmp_path, monkeypatch, capsys, hermetic_data_dir) -> None:
    monkeypatch.delenv("TOLOKA_TOKEN", raising=False)
    sheet = write_csv(tmp_path / "p.csv", [row(i) for i in range(3)])
    code = main(["run", str(sheet), "--ledger", str(tmp_path / "l.sqlite"), "--out", str(tmp_path / "r")])
    assert code == 0
    assert (hermetic_data_dir / "sandbox.sqlite").exists()  # the embedded server's state lives in the data dir
    assert (tmp_path / "l.sqlite").exists() and summaries(tmp_path / "r")
    captured = capsys.readouterr()
    assert "Paid" in captured.out
    assert any(e["event"] == "data_dir" and e["data_dir"] == str(hermetic_data_dir) for e in events(captured.err))


def test_data_dir_holds_ledger_reports_and_sandbox_and_every_run_names_it(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    log = io.StringIO()
    configure = logs.configure_logging
    monkeypatch.setattr(logs, "configure_logging", lambda **kw: configure(**kw, stream=log))
    sheet = write_csv(tmp_path / "p.csv", [row(i) for i in range(3)])
    assert main(["--log-json", "run", str(sheet), "--data-dir", "d"]) == 0
    data = tmp_path / "d"
    assert (data / "ledgers" / "local.sqlite").exists() and (data / "sandbox.sqlite").exists()
    [summary] = summaries(data / "reports")
    assert summary["batch_id"] == "p"
    logged = [json.loads(line) for line in log.getvalue().splitlines()]
    assert any(e["event"] == "data_dir" and e["data_dir"] == str(data) and e["target"].startswith("embedded:")
               and e["ledger"] == str(data / "ledgers" / "local.sqlite") and e["reports"] == str(data / "reports")
               for e in logged)


def test_payout_data_dir_variable_is_the_default(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PAYOUT_DATA_DIR", str(tmp_path / "from-env"))
    sheet = write_csv(tmp_path / "p.csv", [row(1)])
    assert main(["run", str(sheet), "--dry-run"]) == 0
    assert summaries(tmp_path / "from-env" / "reports")[0]["dry_run"] is True


def test_api_url_uses_a_ledger_of_its_own_and_batch_ids_from_a_template(sandbox, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TOLOKA_TOKEN", TOKEN)
    sheet = write_csv(tmp_path / "wk.csv", [row(i) for i in range(3)])
    cfg = tmp_path / "c.toml"
    cfg.write_text('batch_id_template = "{sheet}-{date}-{env}"\n')
    data = tmp_path / "d"
    assert main(["run", str(sheet), "--api-url", sandbox.url + "/", "--config", str(cfg), "--data-dir", str(data)]) == 0
    port = sandbox.url.rsplit(":", 1)[1]
    assert (data / "ledgers" / f"api-127.0.0.1-{port}.sqlite").exists()
    assert not (data / "ledgers" / "local.sqlite").exists() and not (data / "sandbox.sqlite").exists()
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert summaries(data / "reports")[0]["batch_id"] == f"wk-{today}-local"


def test_sheet_order_does_not_change_the_default_batch(tmp_path, hermetic_data_dir) -> None:
    a = write_csv(tmp_path / "a.csv", [row(1)])
    b = write_csv(tmp_path / "b.csv", [row(2)])
    assert main(["run", str(b), str(a)]) == 0
    assert main(["run", str(a), str(b)]) == 0
    first, second = summaries(hermetic_data_dir / "reports")
    assert first["batch_id"] == second["batch_id"] == "a+b"
    assert second["counts"]["already_paid"] == 2 and not second["counts"].get("paid")


def test_an_unusable_data_dir_is_one_line_and_exit_2(tmp_path, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    sheet = write_csv(tmp_path / "p.csv", [row(1)])
    assert main(["run", str(sheet), "--data-dir", str(blocker / "data")]) == 2
    [line] = events(capsys.readouterr().err)
    assert line["event"] == "error" and line["exit_code"] == 2
    assert line["message"].startswith("cannot create the ledger folder")
    assert str(blocker / "data") in line["message"] and "--data-dir" in line["message"]


def test_a_missing_sheet_is_one_line_and_exit_2_before_any_target_starts(tmp_path, capsys, hermetic_data_dir) -> None:
    assert main(["run", str(tmp_path / "missing.csv")]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "missing.csv does not exist" in lines[0]
    assert not (hermetic_data_dir / "sandbox.sqlite").exists()


def test_flags_reach_the_settings(tmp_path) -> None:
    args = build_parser().parse_args(["run", "s.csv", "--allow-repeats", "--max-wait", "12.5",
                                      "--data-dir", str(tmp_path)])
    s = settings_from(args)
    assert s.allow_repeats is True and s.max_wait_s == 12.5 and s.data_dir == tmp_path
    s = settings_from(build_parser().parse_args(["run", "s.csv"]))
    assert s.allow_repeats is False and s.max_wait_s == 1800.0


def test_max_wait_must_be_positive(tmp_path, capsys) -> None:
    sheet = write_csv(tmp_path / "p.csv", [row(1)])
    assert main(["run", str(sheet), "--max-wait", "0", "--dry-run"]) == 2
    assert "max_wait_s" in capsys.readouterr().err


# -- recover -----------------------------------------------------------------------------------------------------


@pytest.fixture
def fake_recover(monkeypatch):
    calls: list[dict] = []

    def run_recover(settings, target, *, since, until):
        calls.append({"settings": settings, "target": target, "since": since, "until": until})
        return 0

    monkeypatch.setitem(sys.modules, "pipeline.recover", types.SimpleNamespace(run_recover=run_recover))
    return calls


def test_recover_passes_the_window_as_utc_datetimes(fake_recover, tmp_path) -> None:
    assert main(["recover", "--since", "2026-01-02", "--until", "2026-01-05", "--data-dir", str(tmp_path)]) == 0
    [call] = fake_recover
    assert call["since"] == datetime(2026, 1, 2, tzinfo=UTC)
    assert call["until"] == datetime(2026, 1, 6, tzinfo=UTC)  # a plain --until date includes that day
    assert call["settings"].data_dir == tmp_path and call["target"].label.startswith("embedded sandbox")
    assert main(["recover", "--since", "2026-01-02T10:30:00+02:00"]) == 0
    assert fake_recover[-1]["since"] == datetime(2026, 1, 2, 8, 30, tzinfo=UTC)
    assert fake_recover[-1]["until"] is None


@pytest.mark.parametrize(("argv", "fragment"), [
    (["--since", "2026-01-05", "--until", "2026-01-02"], "must be after --since"),
    (["--since", "2999-01-01"], "in the future"),
])
def test_recover_rejects_a_bad_window(fake_recover, argv, fragment, capsys) -> None:
    assert main(["recover", *argv]) == 2
    assert fragment in capsys.readouterr().err and not fake_recover


def test_recover_rejects_a_date_it_cannot_read(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["recover", "--since", "last tuesday"])
    assert exc.value.code == 2 and "not a date" in capsys.readouterr().err


def test_recover_without_its_module_is_a_clear_usage_error(monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "pipeline.recover", None)  # as if the module were not installed
    assert main(["recover", "--since", "2026-01-01"]) == 2
    assert "recover is not available" in capsys.readouterr().err
