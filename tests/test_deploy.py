"""Issue 10: the scheduler recipes in deploy/ — each one checked: the cron line's syntax and its `payout` command,
the systemd units through `systemd-analyze verify`, the Airflow DAG loaded without Airflow (Airflow 3 cannot share
this venv) with its exit-code mapping driven by the real `payout` CLI."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from sandbox_fixtures import TOKEN
from sheet_factory import row, write_csv

from pipeline.cli import build_parser

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
PAYOUT = str(Path(sys.executable).with_name("payout"))  # this venv's console script
INSTALLED = "/opt/payout/venv/bin/payout"  # where the recipes expect payout's own venv
RANGES = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]


def cron_field_ok(field: str, low: int, high: int) -> bool:
    for part in field.split(","):
        m = re.fullmatch(r"(\*|(\d+)(?:-(\d+))?)(?:/(\d+))?", part)
        if not m:
            return False
        numbers = [int(n) for n in m.group(2, 3) if n is not None]
        if any(not low <= n <= high for n in numbers) or (m.group(4) is not None and int(m.group(4)) == 0):
            return False
    return True


def payout_args(command: str) -> list[str]:
    """The arguments after the payout binary in a shell command line (env assignments and redirections dropped)."""
    words = shlex.split(command.split(">>")[0])
    at = next(i for i, w in enumerate(words) if w.endswith("/payout"))
    assert words[at] == INSTALLED
    return words[at + 1:]


def cron_entries() -> list[tuple[list[str], str, str]]:
    entries = []
    for line in (DEPLOY / "cron" / "payout.cron").read_text().splitlines():
        if not line.strip() or line.startswith("#") or re.match(r"^[A-Z_]+=", line):
            continue
        fields = line.split(None, 6)
        entries.append((fields[:5], fields[5], fields[6]))
    return entries


def test_the_cron_line_is_valid_and_its_command_parses() -> None:
    [(when, user, command)] = cron_entries()
    assert all(cron_field_ok(f, lo, hi) for f, (lo, hi) in zip(when, RANGES)), when
    assert user == "payout" and "TOLOKA_TOKEN_FILE=" in command and "TOLOKA_TOKEN=" not in command
    args = build_parser().parse_args(payout_args(command))
    assert args.command == "run" and args.env == "production" and args.lock_timeout > 0 and args.log_json
    assert not cron_field_ok("61", 0, 59) and not cron_field_ok("*/0", 0, 59)  # the checker can fail


def test_the_systemd_units_verify_and_run_payout() -> None:
    service = (DEPLOY / "systemd" / "payout.service").read_text()
    [exec_start] = re.findall(r"^ExecStart=(.*)$", service, re.M)
    args = build_parser().parse_args(payout_args(exec_start))
    assert args.command == "run" and args.lock_timeout > 0
    assert "TOLOKA_TOKEN_FILE=%d/" in service and "UMask=0077" in service
    timer = (DEPLOY / "systemd" / "payout.timer").read_text()
    [when] = re.findall(r"^OnCalendar=(.*)$", timer, re.M)
    [(cron, _, _)] = cron_entries()
    assert when == f"*-*-* {int(cron[1]):02d}:{int(cron[0]):02d}:00 UTC"  # the same night as the cron recipe


def test_systemd_analyze_verify_finds_no_problem(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    for unit in ("payout.service", "payout.timer"):  # verify needs ExecStart to exist: point it at this venv
        (tmp_path / unit).write_text((DEPLOY / "systemd" / unit).read_text().replace(INSTALLED, PAYOUT))
    out = subprocess.run([analyze, "verify", "--man=no", str(tmp_path / "payout.service"),
                          str(tmp_path / "payout.timer")], capture_output=True, text=True, timeout=60)
    said = out.stdout + out.stderr
    assert out.returncode == 0 and "Unknown" not in said and "ignoring" not in said, said
    bad = tmp_path / "bad.timer"
    bad.write_text("[Timer]\nOnCalendar=*-*-* 25:99:00\n[Install]\nWantedBy=timers.target\n")
    (tmp_path / "bad.service").write_text("[Service]\nExecStart=/bin/true\n")
    assert subprocess.run([analyze, "verify", "--man=no", str(bad)], capture_output=True).returncode != 0


# -- the Airflow DAG, loaded without Airflow --------------------------------------------------------------------


class Skip(Exception):
    pass


class Fail(Exception):
    pass


class Retry(Exception):
    pass


def load_dag() -> tuple[types.ModuleType, dict[str, Any]]:
    """Import deploy/airflow/payout_dag.py with the few Airflow names it uses stood in for (Airflow cannot be
    installed beside payout's test extra); returns the module and what it gave DAG()."""
    seen: dict[str, Any] = {"tasks": []}

    class DAG:
        def __init__(self, **kwargs: Any) -> None:
            seen.update(kwargs)

        def __enter__(self) -> DAG:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

    def task(**kwargs: Any) -> Any:
        def wrap(fn: Any) -> Any:
            seen["tasks"].append((kwargs, fn))
            return lambda: None
        return wrap

    exceptions = types.ModuleType("airflow.exceptions")
    exceptions.AirflowSkipException, exceptions.AirflowFailException, exceptions.AirflowException = Skip, Fail, Retry
    sdk = types.ModuleType("airflow.sdk")
    sdk.DAG, sdk.task = DAG, task
    saved = {k: sys.modules.get(k) for k in ("airflow", "airflow.exceptions", "airflow.sdk")}
    sys.modules.update({"airflow": types.ModuleType("airflow"), "airflow.exceptions": exceptions, "airflow.sdk": sdk})
    try:
        module = types.ModuleType("payout_dag")
        source = (DEPLOY / "airflow" / "payout_dag.py").read_text()
        exec(compile(source, str(DEPLOY / "airflow" / "payout_dag.py"), "exec"), module.__dict__)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return module, seen


def test_the_dag_schedules_one_payout_task_like_the_cron_recipe() -> None:
    dag, seen = load_dag()
    [(cron, _, command)] = cron_entries()
    assert seen["dag_id"] == "payout_nightly" and seen["schedule"] == " ".join(cron)
    assert seen["max_active_runs"] == 1 and seen["catchup"] is False
    assert [kw["task_id"] for kw, _ in seen["tasks"]] == ["payout_run"]
    assert dag.PAYOUT_BIN == INSTALLED
    assert build_parser().parse_args(dag.ARGS).lock_timeout > 0
    assert [dag.state_of(c)[0] for c in (0, 1, 2, 3, 4, 143)] == [
        "success", "failed", "failed", "up_for_retry", "skipped", "up_for_retry"]


def test_the_dag_maps_real_payout_exit_codes_to_task_states(sandbox, tmp_path: Path, monkeypatch) -> None:
    from pipeline.ledger import Ledger

    dag, _ = load_dag()
    monkeypatch.setenv("PAYOUT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TOLOKA_TOKEN", TOKEN)
    good = write_csv(tmp_path / "good.csv", [row(i) for i in range(3)])
    bad = write_csv(tmp_path / "bad.csv", [row(1), row(2, amount="x")])
    target = ["--api-url", sandbox.url, "--batch-id", "dag"]
    assert dag.run_payout(["run", str(good), *target], PAYOUT) == 0
    with pytest.raises(Fail, match="exited 1"):
        dag.run_payout(["run", str(bad), *target], PAYOUT)
    with pytest.raises(Fail, match="exited 2"):
        dag.run_payout(["run", str(tmp_path / "missing.csv"), *target], PAYOUT)
    port = sandbox.url.rsplit(":", 1)[1]
    with Ledger(tmp_path / "data" / "ledgers" / f"api-127.0.0.1-{port}.sqlite"), pytest.raises(Skip, match="exited 4"):
        dag.run_payout(["run", str(good), *target], PAYOUT)
    monkeypatch.setenv("TOLOKA_TOKEN", "wrong")
    with pytest.raises(Retry, match="exited 3"):
        dag.run_payout(["retry", "--api-url", sandbox.url], PAYOUT)
