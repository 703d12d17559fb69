"""The shared ledger on a real PostgreSQL server: schema versions and migrations (both backends), claims with a
lease, planning taken in turns, and `payout run` end to end against the sandbox with a PostgreSQL ledger.

The end-to-end scenarios of tests/test_run.py and tests/test_exactly_once_scenarios.py run here a second time
with `--ledger postgresql://...` (the `payout` fixture below maps each ledger the test names to a database of
its own); the chaos suite has its own multi-worker test (tests/chaos/test_chaos_workers.py).
"""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from pathlib import Path

import pandas as pd
import psycopg
import pytest
import test_exactly_once_scenarios as scenarios
import test_run
from payout_helpers import paid_multiset, server_bonuses
from sandbox_fixtures import TOKEN
from sheet_factory import row, uid, write_csv

from pipeline.cli import main
from pipeline.errors import UsageError
from pipeline.ledger import SCHEMA_VERSION, Ledger, RowResult
from pipeline.report import read_rows


def planned_frame(keys: list[str], op_id: str = "op-1", chunk_no: int = 1) -> pd.DataFrame:
    return pd.DataFrame({"row_key": keys, "source_file": "s.csv", "source_row": range(2, 2 + len(keys)),
                         "user_id": ["a" * 32] * len(keys), "amount_cents": [150] * len(keys),
                         "chunk_no": chunk_no, "operation_id": op_id, "attempt": 1})


# -- schema versions --------------------------------------------------------------------------------------

# The first release's layout (no version, no content keys, look-alikes, run counts or claims).
V1 = """
CREATE TABLE runs (run_id TEXT PRIMARY KEY, batch_id TEXT, kind TEXT NOT NULL, started TEXT NOT NULL, finished TEXT,
                   outcome TEXT, meta TEXT);
CREATE TABLE rows (row_key TEXT PRIMARY KEY, batch_id TEXT NOT NULL, run_id TEXT NOT NULL, source_file TEXT,
                   source_row INTEGER, user_id TEXT NOT NULL, amount_cents INTEGER NOT NULL, item BLOB NOT NULL,
                   status TEXT NOT NULL, attempt INTEGER NOT NULL, operation_id TEXT, bonus_id TEXT, errors TEXT,
                   retryable INTEGER NOT NULL DEFAULT 0, paid_run_id TEXT, updated TEXT NOT NULL);
CREATE TABLE operations (operation_id TEXT PRIMARY KEY, batch_id TEXT NOT NULL, run_id TEXT NOT NULL,
                   chunk_no INTEGER, attempt INTEGER NOT NULL, item_count INTEGER NOT NULL, state TEXT NOT NULL,
                   status TEXT, submitted TEXT, started TEXT, finished TEXT, progress INTEGER, details TEXT,
                   updated TEXT NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO rows VALUES ('k1', 'b', 'r0', 's.csv', 2, 'u', 150, X'7B7D', 'paid', 1, 'op-0', '100000000001', NULL, 0,
                         'r0', '2026-01-01T00:00:00Z');
INSERT INTO operations VALUES ('op-0', 'b', 'r0', 1, 1, 1, 'done', 'SUCCESS', NULL, NULL, NULL, 100, '{}',
                               '2026-01-01T00:00:00Z');
"""


def _v1(location: str | Path) -> None:
    if isinstance(location, Path):
        with sqlite3.connect(location) as db:
            db.executescript(V1)
    else:
        with psycopg.connect(location, autocommit=True) as db:
            db.execute(V1.replace("BLOB", "BYTEA").replace("X'7B7D'", "'{}'::bytea"))


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    if request.param == "sqlite":
        return tmp_path / "ledger.sqlite"
    return str(request.getfixturevalue("pg_url"))


def test_a_ledger_of_the_first_release_is_upgraded_in_place_keeping_its_rows(location: str | Path) -> None:
    _v1(location)
    with Ledger(location) as ledger:
        assert ledger.get_meta("schema_version") == str(SCHEMA_VERSION)
        known = ledger.known_rows(["k1"])
        assert known[["status", "bonus_id"]].to_dict("records") == [{"status": "paid", "bonus_id": "100000000001"}]
        ledger.record_intent("r1", "b", planned_frame(["k2"]).assign(content_key="c2", lookalike="l2"), [b"{}"])
        assert ledger.rows_frame(statuses=["planned"])["lookalike"].tolist() == ["l2"]
    with Ledger(location) as ledger:  # the second opening finds the current version: nothing to do
        assert ledger.get_meta("schema_version") == str(SCHEMA_VERSION)


def test_a_ledger_of_a_newer_version_is_refused_unchanged(location: str | Path) -> None:
    with Ledger(location) as ledger:
        ledger.set_meta("schema_version", str(SCHEMA_VERSION + 1))
    for _ in range(2):  # refused, and left as it was (so refused again)
        with pytest.raises(UsageError, match=f"schema version {SCHEMA_VERSION + 1}, newer"):
            Ledger(location).__enter__()


def test_a_failed_upgrade_changes_nothing(location: str | Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One transaction: a migration that breaks half-way leaves the old layout, and the next opening upgrades."""
    _v1(location)
    import pipeline.ledger as ledger_module

    monkeypatch.setattr(ledger_module, "POST_MIGRATION", "CREATE INDEX broken ON no_such_table(x);")
    with pytest.raises(Exception, match="no_such_table|no such table"):
        Ledger(location).__enter__()
    monkeypatch.undo()
    if isinstance(location, Path):
        with sqlite3.connect(location) as db:
            assert "content_key" not in {r[1] for r in db.execute("PRAGMA table_info(rows)")}
    else:
        with psycopg.connect(location) as db:
            assert not db.execute("SELECT 1 FROM information_schema.columns WHERE table_name='rows'"
                                  " AND column_name='content_key'").fetchall()
    with Ledger(location) as ledger:
        assert ledger.get_meta("schema_version") == str(SCHEMA_VERSION)


def test_the_same_statements_cover_every_ledger_method(location: str | Path) -> None:
    """Reads and writes beyond the basic contract (tests/test_ledger.py): the big-ledger path of known_rows,
    content and look-alike look-ups, recovery, settling unknown rows, superseding, run counts."""
    with Ledger(location) as ledger:
        assert ledger.bind_target("http://x") is True
        ledger.start_run("r1", "b", "run", {"a": 1}, sheet_rows=3, to_plan=3)
        frame = planned_frame(["k1", "k2", "k3"]).assign(content_key=["c1", "k2", "k3"],
                                                         lookalike=["l1", "l2", "l3"])
        ledger.record_intent("r1", "b", frame, [b'{"x": 1}', b"{}", b"{}"])
        assert ledger.rows_of_operation("op-1")[0] == ("k1", b'{"x": 1}')
        ledger.mark_submitted("op-1", {"status": "RUNNING", "details": {"total_count": 3}})
        ledger.record_outcome("op-1", {"status": "SUCCESS"}, [RowResult("k1", "paid", bonus_id="7"),
                                                              RowResult("k2", "unknown"),
                                                              RowResult("k3", "failed", errors=[])], "r1")
        assert ledger.operations_with_unknown_rows() == ["op-1"]
        assert ledger.settle_unknown("op-1", {"status": "SUCCESS"}, [RowResult("k2", "paid", bonus_id="8")], "r1") == 1
        assert ledger.supersede_missing("b", {"k1", "k2"}, "r1") == 1
        assert ledger.batch_has_bonus_keys("b")
        assert sorted(ledger.rows_by_content(["c1", "k2"])["row_key"]) == ["k1", "k2"]
        assert sorted(ledger.recent_lookalikes(["l1", "l2"], "other", "2000")["lookalike"]) == ["l1", "l2"]
        assert ledger.other_batches_since("other", "2000") and not ledger.other_batches_since("b", "2000")
        many = [f"x{i}" for i in range(50)] + ["k1"]  # more keys than rows: the temp-table path
        assert ledger.known_rows(many)["row_key"].tolist() == ["k1"]
        ledger.record_recovered({"id": "op-r", "status": "SUCCESS"},
                                [("k9", "u", 100, b"{}", "paid", "9", None, "l9", "2026-01-01")])
        ledger.claim_recovered("b", ["k9"])
        assert ledger.known_operation_ids() == {"op-1", "op-r"}
        assert ledger.unplanned_runs("b") == []
        ledger.finish_run("r1", "exit 0")
        assert ledger.latest_run("run")["outcome"] == "exit 0"  # type: ignore[index]
        ops = ledger.operations_frame(run_id="r1")
        assert ops["state"].tolist() == ["done"] and ops["status"].tolist() == ["SUCCESS"]
        assert sorted(ledger.rows_frame(batch_id="b", statuses=["paid"])["row_key"]) == ["k1", "k2", "k9"]


# -- claims (PostgreSQL only) ------------------------------------------------------------------------------


def test_each_open_operation_is_claimed_by_exactly_one_worker(pg_url: str) -> None:
    with Ledger(pg_url) as setup:
        for n in range(1, 31):
            setup.record_intent("r1", "b", planned_frame([f"k{n}"], f"op-{n:02d}", n), [b"{}"])
    got: dict[str, list[str]] = {}

    def worker(name: str) -> None:
        with Ledger(pg_url) as ledger:
            got[name] = [op.operation_id for op in iter(lambda: ledger.claim_operation(name, 60), None)]

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [op for ops in got.values() for op in ops]
    assert sorted(claimed) == [f"op-{n:02d}" for n in range(1, 31)]  # every one, none twice


def test_an_expired_claim_is_taken_over_and_a_released_one_at_once(pg_url: str) -> None:
    with Ledger(pg_url) as a, Ledger(pg_url) as b:
        a.record_intent("r1", "b", planned_frame(["k1"], "op-1"), [b"{}"])
        a.record_intent("r1", "b", planned_frame(["k2"], "op-2", 2), [b"{}"])
        assert a.claim_operation("A", 600).operation_id == "op-1"  # type: ignore[union-attr]
        assert a.claim_operation("A", 600).operation_id == "op-2"  # type: ignore[union-attr]
        assert b.claim_operation("B", 600) is None
        with psycopg.connect(pg_url, autocommit=True) as db:  # A's first lease runs out (A died; no renewal)
            db.execute("UPDATE operations SET claim_until = clock_timestamp() - interval '1 second'"
                       " WHERE operation_id = 'op-1'")
        # B takes op-1 over (it was planned by run r1, so B's executor asks the server first); op-2 is still A's
        taken = b.claim_operation("B", 600)
        assert taken is not None and taken.operation_id == "op-1" and taken.run_id == "r1"
        assert b.claim_operation("B", 600) is None
        a.release_claims("A")  # A stops: op-2 is free at once
        assert b.claim_operation("B", 600).operation_id == "op-2"  # type: ignore[union-attr]
        b.record_outcome("op-2", {"status": "SUCCESS"}, [RowResult("k2", "paid", bonus_id="1")], "rB")
        assert [op.operation_id for op in b.open_operations()] == ["op-1"]


def test_planning_is_taken_in_turns(pg_url: str) -> None:
    with Ledger(pg_url) as a, Ledger(pg_url) as b:
        a.hold_planning_lock()
        entered = threading.Event()

        def second() -> None:
            b.hold_planning_lock()
            entered.set()
            b.release_planning_lock()

        t = threading.Thread(target=second)
        t.start()
        assert not entered.wait(0.3)  # (a negative check: B is still waiting, whatever the timing)
        a.release_planning_lock()
        t.join(30)
        assert entered.is_set()


def test_a_postgresql_ledger_that_cannot_be_reached_is_exit_2_naming_it_without_its_password(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("TOLOKA_TOKEN", TOKEN)
    sheet = write_csv(tmp_path / "p.csv", [row(1)])
    url = f"postgresql://payout:s3cret@127.0.0.1:{port}/nowhere"
    assert main(["run", str(sheet), "--api-url", "http://127.0.0.1:9", "--batch-id", "b", "--ledger", url]) == 2
    err = capsys.readouterr().err
    assert f"127.0.0.1:{port}/nowhere" in err and "s3cret" not in err


# -- end to end with a PostgreSQL ledger -------------------------------------------------------------------


@pytest.fixture
def payout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg_server):
    """The `payout` fixture of tests/conftest.py, with every ledger a database of the session's PostgreSQL
    server (the same ledger path a test names twice is the same database)."""
    monkeypatch.setenv("TOLOKA_TOKEN", TOKEN)
    databases: dict[Path, str] = {}

    def run(*args: str, ledger: Path | None = None, out: Path | None = None) -> int:
        cmd, rest = args[0], list(args[1:])
        if cmd == "run" and "--batch-id" not in rest:  # as tests/conftest.py's: the sorted sheet stems
            sheets = [a for a in rest[:next((i for i, a in enumerate(rest) if a.startswith("-")), len(rest))]]
            rest += ["--batch-id", "+".join(sorted(Path(s).stem for s in sheets))]
        if cmd in ("run", "retry", "audit", "recover"):
            where = ledger or tmp_path / "ledger.sqlite"
            if where not in databases:
                databases[where] = pg_server.new_database()
            rest += ["--ledger", databases[where], "--out", str(out or tmp_path / "reports")]
        return main(["--log-json", cmd, *rest])

    return run


E2E = [
    test_run.test_run_pays_every_valid_unique_row_exactly_once,
    test_run.test_second_run_of_the_same_sheet_pays_nothing_and_reports_already_paid,
    test_run.test_clean_sheet_exits_zero_and_summary_accounts_for_the_money,
    test_run.test_dry_run_plans_and_sends_nothing,
    test_run.test_unreachable_api_is_exit_3_and_rows_stay_pending_for_the_next_run,
    scenarios.test_deleting_or_fixing_an_invalid_copy_does_not_pay_the_valid_row_again,
    scenarios.test_reordered_rows_are_not_paid_again,
    scenarios.test_a_corrected_failed_row_is_superseded_never_resent_by_retry,
    scenarios.test_a_deleted_failed_row_is_not_resent_by_retry,
    scenarios.test_a_renamed_file_or_another_sheet_order_pays_nothing_again,
    scenarios.test_a_reused_bonus_key_with_other_content_is_a_row_error_naming_the_payment,
    scenarios.test_a_look_alike_of_a_recent_payment_under_another_batch_is_held,
]


@pytest.mark.parametrize("scenario", E2E, ids=[f.__name__ for f in E2E])
def test_end_to_end_with_a_postgresql_ledger(scenario, request: pytest.FixtureRequest) -> None:
    import inspect

    wanted = inspect.signature(scenario).parameters
    scenario(**{name: request.getfixturevalue(name) for name in wanted})


def test_two_workers_pay_one_batch_exactly_once(sandbox, pg_url: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Two `payout run`s of one sheet at once on one PostgreSQL ledger (threads here; processes in the chaos
    test): one plans, both pay, each row once, and both reports account for every row."""
    monkeypatch.setenv("TOLOKA_TOKEN", TOKEN)
    rows = [row(i, amount=f"{1 + i % 5}.{i % 100:02d}") for i in range(120)]
    sheet = write_csv(tmp_path / "p.csv", rows)
    expected = Counter((uid(i), f"{1 + i % 5}.{i % 100:02d}") for i in range(120))
    codes: dict[int, int] = {}

    def worker(n: int) -> None:
        codes[n] = main(["--log-json", "run", str(sheet), "--api-url", sandbox.url, "--batch-id", "b",
                         "--ledger", pg_url, "--out", str(tmp_path / f"out{n}"), "--chunk-size", "10",
                         "--concurrency", "2"])

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(2)]
    for t in threads:  # (signals are only installed in the main thread: none here)
        t.start()
    for t in threads:
        t.join()
    assert codes == {0: 0, 1: 0}
    assert paid_multiset(server_bonuses(sandbox.url)) == expected
    for n in range(2):
        report = read_rows(sorted((tmp_path / f"out{n}").iterdir())[-1])
        assert set(report["status"]) <= {"paid", "already_paid"} and len(report) == 120


def test_the_ledger_location_is_a_path_or_a_postgresql_url_from_the_flag_or_a_config(tmp_path: Path) -> None:
    from pipeline.config import load_settings

    url = "postgresql://payout:pw@db.internal:5432/payout?sslmode=require"
    s = load_settings("local", ledger_path=url)
    assert s.ledger == url and s.ledger_label == "postgresql://payout:***@db.internal:5432/payout?sslmode=require"
    config = tmp_path / "c.toml"
    config.write_text('ledger_url = "postgresql://u@h/db"\n')
    assert load_settings("local", config).ledger == "postgresql://u@h/db"
    config.write_text('ledger_path = "postgres://u@h/db"\nclaim_lease_s = 5\n')
    assert load_settings("local", config).ledger == "postgres://u@h/db"
    assert load_settings("local", config).claim_lease_s == 5.0
    assert load_settings("local", config, ledger_path=tmp_path / "l.sqlite").ledger == tmp_path / "l.sqlite"
    config.write_text('ledger_url = "/not/a/url"\n')
    with pytest.raises(UsageError, match="must be a postgresql:// URL"):
        load_settings("local", config)


def test_sigterm_stops_a_worker_that_releases_its_claims_and_the_next_run_pays_each_row_once(
        tmp_path: Path, pg_url: str) -> None:
    """A PostgreSQL worker told to stop (SIGTERM) exits 143 with its partial report, leaves no claim behind (the
    next worker need not wait for a lease), and the next run pays every row exactly once."""
    import signal

    from payout_helpers import payout_process, post_count
    from sandbox_fixtures import SandboxProcess
    from waiting import wait_for

    rows = [row(i, amount=f"{1 + i % 5}.{i % 100:02d}") for i in range(60)]
    sheet = write_csv(tmp_path / "p.csv", rows)
    expected = Counter((uid(i), f"{1 + i % 5}.{i % 100:02d}") for i in range(60))
    config = tmp_path / "c.toml"
    config.write_text("signal_grace_s = 1.0\npoll_initial_s = 0.05\nclaim_lease_s = 600\n")
    with SandboxProcess(tmp_path / "s.sqlite", "--faults", "slow_op_ms=3000") as server:
        args = ("run", str(sheet), "--api-url", server.url, "--batch-id", "b", "--ledger", pg_url,
                "--out", str(tmp_path / "out"), "--config", str(config), "--chunk-size", "10", "--concurrency", "2")
        proc = payout_process(*args)
        wait_for(lambda: post_count(server.url) >= 1 or proc.poll() is not None, "the first POST", 60)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143
        with psycopg.connect(pg_url) as db:
            assert db.execute("SELECT count(*) FROM operations WHERE claimed_by IS NOT NULL"
                              " AND state IN ('planned', 'submitted')").fetchone() == (0,)
        # the next run resumes at once (claims released; a 600 s lease would otherwise hold it up)
        assert payout_process(*args).wait(timeout=120) == 0
        assert paid_multiset(server_bonuses(server.url)) == expected
