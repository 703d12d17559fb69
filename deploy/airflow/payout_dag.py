"""Airflow DAG: the nightly payout, calling the `payout` CLI installed in a venv of its own.

Airflow 3 cannot share a venv with payout's test extra (toloka-kit pins), so Airflow never imports payout: this
DAG runs `$PAYOUT_BIN` (default /opt/payout/venv/bin/payout) as a subprocess and maps its exit code to a task
state (README "Exit codes"):

    0        success
    1        failed, not retried: rows need attention (invalid, failed, held...); a person reads the report
    2        failed, not retried: bad usage or configuration; re-running cannot fix it
    3        failed, retried later: API unreachable, token refused, quota spent (nothing is paid twice)
    4        skipped: another payout run held the ledger past --lock-timeout
    128+N    failed, retried: stopped by a signal; the next try resumes

Copy this file into the DAGs folder; set PAYOUT_BIN and the sheet/config paths below (or Airflow Variables).
The token reaches payout through TOLOKA_TOKEN_FILE (a file only the worker's user can read), never the command line.
"""

from __future__ import annotations

import os
import subprocess
from datetime import datetime, timedelta

from airflow.exceptions import AirflowException, AirflowFailException, AirflowSkipException
from airflow.sdk import DAG, task

PAYOUT_BIN = os.environ.get("PAYOUT_BIN", "/opt/payout/venv/bin/payout")
SHEET = os.environ.get("PAYOUT_SHEET", "/srv/finance/bonuses.csv")
CONFIG = os.environ.get("PAYOUT_CONFIG", "/etc/payout/prod.toml")
ARGS = ["run", SHEET, "--env", "production", "--config", CONFIG, "--lock-timeout", "1800", "--log-json"]

# exit code -> (task state, why); anything else (128+N) is retried
STATES = {
    0: ("success", "every valid row is paid"),
    1: ("failed", "finished, but rows need attention: read the report (summary.json, report.html)"),
    2: ("failed", "bad usage or configuration: nothing was sent; fix it, re-running cannot"),
    3: ("up_for_retry", "API unreachable, token refused or quota spent: retried later; nothing is paid twice"),
    4: ("skipped", "another payout run held the ledger past --lock-timeout"),
}


def state_of(code: int) -> tuple[str, str]:
    """The task state and the reason for a `payout` exit code."""
    return STATES.get(code, ("up_for_retry", f"stopped by signal {code - 128}: the next try resumes"))


def run_payout(args: list[str] | None = None, binary: str | None = None) -> int:
    """Run payout; return 0 or raise the exception that gives the task its state."""
    code = subprocess.run([binary or PAYOUT_BIN, *(args or ARGS)], check=False).returncode
    state, why = state_of(code)
    message = f"payout exited {code}: {why}"
    if state == "success":
        return code
    if state == "skipped":
        raise AirflowSkipException(message)
    if state == "failed":
        raise AirflowFailException(message)  # no retry
    raise AirflowException(message)  # retried per `retries`


with DAG(
    dag_id="payout_nightly",
    schedule="15 2 * * *",
    start_date=datetime(2026, 11, 1),
    catchup=False,
    max_active_runs=1,  # and --lock-timeout guards the ledger if a manual run overlaps
    default_args={"retries": 3, "retry_delay": timedelta(minutes=30)},
    tags=["payout"],
) as dag:

    @task(task_id="payout_run")
    def payout_run() -> int:
        return run_payout()

    payout_run()
