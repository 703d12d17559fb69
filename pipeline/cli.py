"""`payout`: the command line. One `except PayoutError` turns every known failure into a message and exit code."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import structlog

from pipeline import html_report, logs, progress, report, signoff
from pipeline.config import Settings, load_settings, preflight, resolve_batch_id, token_from_env
from pipeline.errors import LedgerLocked, PayoutError, UsageError, next_step
from pipeline.run import RunResult, retry_failed, run_payout
from pipeline.signals import latch, latched, stop_on_signals
from pipeline.target import Target, make_client
from pipeline.toloka import refuse_plain_http

EXIT_CODES = """exit codes:
  0  every valid row is paid
  1  finished, but some rows are invalid, duplicate, held, failed, pending or unknown, or were never
     planned (report written)
  2  bad usage, configuration, a ledger of another target, an unwritable folder, a sheet that cannot be
     read or is over a limit, a control total that disagrees with its rows, or a plan the spend guard
     refused (nothing sent)
  3  API unreachable, token refused, request quota spent, or an operation not done within --max-wait
     (rows left pending; re-run later)
  4  another payout run holds the ledger lock
  128+N  stopped by signal N (143 SIGTERM, 130 SIGINT): partial report written; run again to resume
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="payout",
        description="Pay Toloka bonuses from finance sheets exactly once, and report what happened to every row. "
                    "Ledgers and reports live in one data folder (--data-dir, $PAYOUT_DATA_DIR, default "
                    "$XDG_DATA_HOME/payout or ~/.local/share/payout), so runs from any folder share them.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  payout run payouts.csv --dry-run        # the plan to sign off; sends nothing\n"
               "  payout run payouts.csv                  # pay it (embedded sandbox; --env production for real)\n"
               "  payout status                           # what the last runs did, and the next step\n\n"
               + EXIT_CODES,
    )
    _log_flags(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = _command(
        sub, "run", "validate, dedupe, pay and report one batch of sheets",
        "Read the sheets, validate every row, drop conflicts and rows already paid, pay the rest through "
        "asynchronous bulk operations, and write OUT/<run_id>/{rows,operations}.parquet and summary.json. Safe to "
        "run again on the same sheet under the same batch id: paid rows are never paid twice. Every target but the "
        "embedded sandbox needs --batch-id (or batch_id_template in a --config file).")
    run.add_argument("sheets", nargs="+", metavar="SHEET", help="CSV, Parquet or Excel (.xlsx) payout sheets")
    _target_args(run)
    run.add_argument("--batch-id", metavar="ID",
                     help="names this payout batch, like PayPal's sender_batch_id: row keys and operation ids "
                          "depend on it, so the same sheet under the same id is never paid twice, and a recurring "
                          "sheet needs a new id each time (e.g. bonuses-2026-11-w48). Required for --env "
                          "sandbox/production and --api-url unless the config sets batch_id_template "
                          "(placeholders {sheet}, {date}, {env}); the embedded sandbox defaults to the sorted "
                          "sheet names joined by '+'. At most 100 printable characters")
    run.add_argument("--dry-run", action="store_true",
                     help="validate, dedupe and plan; write the report with status 'planned'; send nothing")
    run.add_argument("--chunk-size", type=int, metavar="N", help="bonuses per asynchronous operation (default 5000)")
    run.add_argument("--concurrency", type=int, metavar="N", help="operations in flight at once (default 4)")
    run.add_argument("--dedupe-policy", choices=["keep-first", "reject-all"],
                     help="what to do with rows Toloka would reject as identical (default keep-first)")
    run.add_argument("--allow-repeats", action="store_true", default=None,
                     help="also pay rows held back as look-alike repeats (same user, amount and texts) of a "
                          "payment made under another batch id within lookalike_window_h (default 72 h); "
                          "without it such rows are held and reported")
    run.add_argument("--confirm-total", type=_confirm_total, metavar="AMOUNT",
                     help="the run's planned total as a person confirmed it, e.g. 1053578.00 (exact, to the cent): "
                          "needed to pay a plan over max_run_cents or max_user_run_cents, or a real run over "
                          "confirm_above_cents; a figure that differs from the planned total always refuses "
                          "(exit 2, nothing sent). --dry-run prints the total to confirm")
    _wait_arg(run)
    _sheet_args(run)

    retry = _command(
        sub, "retry", "re-submit failed (retryable) and pending rows from the ledger, without the sheet",
        "Resume operations left in flight and re-submit rows whose last attempt failed with a retryable error, "
        "under a new operation id. Rows that failed validation at Toloka are not retried: fix the sheet and "
        "`payout run` it again.")
    retry.add_argument("--run", dest="run_id", help="only rows of this run (default: all in the ledger)")
    _target_args(retry)
    _wait_arg(retry)

    from pipeline.sandbox.cli import add_arguments as sandbox_arguments

    sandbox = sub.add_parser("sandbox", help="start the local Toloka-compatible API server",
                             description="A local server that speaks Toloka's user-bonuses and operations API, "
                                         "with fault injection. See README 'Sandbox'.",
                             epilog="example:\n  TOLOKA_TOKEN=secret payout sandbox --db /tmp/sandbox.sqlite --port 8000",
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    _log_flags(sandbox, suppress=True)
    sandbox_arguments(sandbox)

    audit = _command(sub, "audit", "reconcile the ledger against the server's own list of bonuses", epilog=None,
                     description="Checks that every bonus the ledger calls paid exists on the server with the "
                                 "same user and amount, and that the server holds no bonus for the batch's users "
                                 "in its time window that the ledger does not know. Exit 0 only when everything "
                                 "matches.")
    _target_args(audit)
    audit.add_argument("--run", dest="run_id", help="audit the batch of this run (default: the whole ledger)")

    recover = _command(
        sub, "recover", "rebuild the ledger's knowledge of operations sent in a time window (lost or new ledger)",
        "Ask the server for the bonus operations sent between --since and --until and bring the ledger up to "
        "date with what they paid, so a lost, restored or copied ledger never lets a row be paid twice.")
    recover.add_argument("--since", required=True, type=_since, metavar="DATE",
                         help="start of the window (inclusive): YYYY-MM-DD (00:00 UTC) or an ISO 8601 time "
                              "(without a zone: UTC)")
    recover.add_argument("--until", type=_until, metavar="DATE",
                         help="end of the window (exclusive): YYYY-MM-DD includes that whole UTC day, or an "
                              "ISO 8601 time (default: now)")
    _target_args(recover)
    _wait_arg(recover)

    status = _command(
        sub, "status", "what the last runs did, from the ledger: counts, totals, open operations, next step",
        "Reads the target's ledger (never the network, never a lock): when each run started and finished, its "
        "batch and sheets, rows per status and the amount paid, operations still open, and the next step in "
        "words. Exit 0, or 2 for a RUN_ID the ledger does not hold.", epilog=None)
    status.add_argument("run_id", nargs="?", metavar="RUN_ID", help="one run (default: the last --last runs)")
    status.add_argument("--last", type=int, default=5, metavar="N", help="how many runs to show (default 5)")
    status.add_argument("--json", action="store_true", help="one JSON document on stdout, for machines")
    _target_args(status)

    export = _command(
        sub, "report", "export a run's report for people: CSV, Excel (.xlsx) or JSON",
        "Reads OUT/<RUN_ID>/rows.parquet (and summary.json) and writes one row per sheet row with its status and "
        "the reason in words. Text cells that a spreadsheet could take for a formula (starting with = + - @, tab "
        "or CR) are neutralised in CSV and .xlsx; amounts stay exact. Prints the file written.", epilog=None)
    export.add_argument("run_id", metavar="RUN_ID", help="the run (its folder under the report root)")
    export.add_argument("--format", dest="export_format", choices=["csv", "xlsx", "json"], default="csv",
                        help="csv (default; UTF-8 with a byte order mark, for Excel), xlsx or json")
    export.add_argument("--output", type=Path, metavar="FILE",
                        help="where to write it (default: beside the report, OUT/<RUN_ID>/rows.<format>)")
    _target_args(export)
    for p in (run, retry, audit, recover):
        p.add_argument("--lock-timeout", type=float, default=0.0, metavar="SECONDS",
                       help="when another payout run holds the ledger, wait up to this long for it to finish "
                            "(default 0: exit 4 at once), e.g. for overlapping nightly runs")
    return parser


def _command(sub: Any, name: str, help: str, description: str, epilog: str | None = EXIT_CODES
             ) -> argparse.ArgumentParser:
    example = EXAMPLES.get(name)
    if example:
        epilog = f"example:\n  {example}\n\n{epilog or ''}".rstrip() + "\n"
    p = sub.add_parser(name, help=help, description=description, epilog=epilog,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _log_flags(p, suppress=True)
    return p


EXAMPLES = {
    "run": "payout run bonuses.csv --env production --batch-id bonuses-2026-w48 --dry-run",
    "retry": "payout retry --env production --run 20261130T020000Z-ab12",
    "audit": "payout audit --env production --run 20261130T020000Z-ab12",
    "recover": "payout recover --env production --since 2026-11-01",
    "status": "payout status --env production            # the last runs; add a RUN_ID or --json",
    "report": "payout report 20261130T020000Z-ab12 --format xlsx --env production",
}


def _log_flags(p: argparse.ArgumentParser, *, suppress: bool) -> None:
    """The log flags, on the main parser (real defaults) and on every command (SUPPRESS: a flag given after
    the command overrides, one not given leaves the main parser's value), so `payout run --log-json` works."""
    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    g = p.add_argument_group("logging")
    g.add_argument("--log-json", action="store_true", default=default(False),
                   help="JSON log lines even on a terminal (off a terminal they always are)")
    g.add_argument("--log-level", default=default("info"), choices=["debug", "info", "warning", "error"])
    g.add_argument("-q", "--quiet", action="store_true", default=default(False),
                   help="warnings and errors only; no progress")
    g.add_argument("-v", "--verbose", action="store_true", default=default(False), help="debug log lines")


def _target_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("target and data")
    g.add_argument("--env", default="local", choices=["local", "sandbox", "production"],
                   help="local (default): an embedded sandbox server on loopback, no token needed; "
                        "sandbox/production: Toloka's hosts from the configs shipped with payout, token from "
                        "TOLOKA_TOKEN (never falls back to the embedded sandbox)")
    g.add_argument("--api-url", metavar="URL",
                   help="any Toloka-compatible server (e.g. a separately started `payout sandbox`); token from "
                        "TOLOKA_TOKEN; its ledger is DATA/ledgers/api-<host>-<port>.sqlite, never the local one")
    g.add_argument("--config", type=Path, metavar="FILE",
                   help="a TOML file overriding the env's settings (any Settings key, e.g. batch_id_template, "
                        "data_dir, max_wait_s); relative paths in it are relative to its folder")
    g.add_argument("--data-dir", type=Path, metavar="DIR",
                   help="where ledgers (DIR/ledgers/<target>.sqlite), reports (DIR/reports) and the embedded "
                        "sandbox (DIR/sandbox.sqlite) live (default: $PAYOUT_DATA_DIR, else data_dir from "
                        "--config, else $XDG_DATA_HOME/payout or ~/.local/share/payout)")
    g.add_argument("--ledger", metavar="PATH|URL",
                   help="SQLite ledger (default DATA/ledgers/<target>.sqlite: local, toloka-sandbox, production, "
                        "or a slug of --api-url; each target has its own so play payouts never mark real rows paid), "
                        "or postgresql://user@host/db: a shared ledger, where every `payout run` of a batch is a "
                        "worker that shares its operations with the others (see README)")
    g.add_argument("--out", type=Path, metavar="DIR", help="report folder root (default DATA/reports)")


def _sheet_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("reading sheets (also settable in a --config file)")
    g.add_argument("--encoding", metavar="NAME",
                   help="CSV text encoding, e.g. utf-8, utf-16, cp1251, cp1252 (default: detected; an unsure guess "
                        "is refused with the candidates)")
    g.add_argument("--delimiter", metavar="CHAR", help="CSV delimiter: , ; | or tab (default: sniffed from the header)")
    g.add_argument("--sheet", metavar="NAME", help=".xlsx: the sheet to pay (needed when several sheets hold data)")
    g.add_argument("--header-row", type=int, metavar="N",
                   help="the header's row number as the spreadsheet shows it (default: found below any title rows)")
    g.add_argument("--decimal-comma", action="store_true", default=None,
                   help="amounts use a decimal comma: 12,50 and 1 234,50 or 1.234,50 (a Russian or European locale)")
    g.add_argument("--mapping", metavar="NAME",
                   help="read the sheet's own headers through the column mapping NAME: a [mappings.NAME] table of "
                        "\"sheet header\" = \"column\" in a config (shipped: ru-finance)")
    g.add_argument("--max-file-mb", type=float, metavar="MB", help="largest sheet file read (default 1024)")
    g.add_argument("--max-rows", type=int, metavar="N", help="most rows in one sheet (default 2,000,000)")
    g.add_argument("--max-columns", type=int, metavar="N", help="most columns in one sheet (default 200)")
    g.add_argument("--max-cell-chars", type=int, metavar="N",
                   help="longest cell: a longer one is a row error in a column payout reads, and cut (with a notice) in "
                        "a column it carries into the report (default 32,767, Excel's own limit)")
    g.add_argument("--max-xlsx-cells", type=int, metavar="N",
                   help="largest .xlsx used range, rows x columns (default 50,000,000)")
    g.add_argument("--max-xlsx-unzipped-mb", type=float, metavar="MB",
                   help="largest uncompressed .xlsx content (default 2048)")


SHEET_FLAGS = ("encoding", "delimiter", "sheet", "header_row", "decimal_comma", "max_file_mb", "max_rows",
               "max_columns", "max_cell_chars", "max_xlsx_cells", "max_xlsx_unzipped_mb",
               "mapping")


def _wait_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-wait", type=float, metavar="SECONDS",
                   help="longest wait for one operation to finish before the run stops and leaves its rows "
                        "pending for the next run (default 1800)")


def _parse_when(text: str, *, end: bool) -> datetime:
    """YYYY-MM-DD (00:00 UTC; with end=True the next day's 00:00, so the whole day is inside) or ISO 8601."""
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()):
            day = datetime.strptime(text.strip(), "%Y-%m-%d").replace(tzinfo=UTC)
            return day + timedelta(days=1) if end else day
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date: {text!r} (use YYYY-MM-DD or an ISO 8601 time)") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _confirm_total(text: str) -> int:
    """--confirm-total: exact cents from decimal text (never a float)."""
    from pipeline.guard import parse_confirm_total

    try:
        return parse_confirm_total(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _since(text: str) -> datetime:
    return _parse_when(text, end=False)


def _until(text: str) -> datetime:
    return _parse_when(text, end=True)


def settings_from(args: argparse.Namespace) -> Settings:
    return load_settings(
        args.env, args.config, api_url=args.api_url, ledger_path=args.ledger, out_dir=args.out,
        data_dir=args.data_dir, chunk_size=getattr(args, "chunk_size", None),
        concurrency=getattr(args, "concurrency", None), dedupe_policy=getattr(args, "dedupe_policy", None),
        max_wait_s=getattr(args, "max_wait", None), allow_repeats=getattr(args, "allow_repeats", None),
        **{flag: getattr(args, flag, None) for flag in SHEET_FLAGS})


@contextlib.contextmanager
def api_target(settings: Settings) -> Iterator[Target]:
    """The embedded sandbox for env local without an api_url; otherwise the configured URL and TOLOKA_TOKEN."""
    if settings.api_url:
        token = token_from_env(required=True)
        assert token is not None
        logs.set_secret(token)
        yield _target(settings.api_url, token, None, settings)
        return
    if settings.env != "local":  # load_settings refuses this already; never pay "production" into a play server
        raise UsageError(f"--env {settings.env} has no api_url; it never falls back to the embedded sandbox")
    from pipeline.sandbox import SandboxServer

    token = secrets.token_urlsafe(16)
    db = settings.sandbox_db
    with SandboxServer(db, token=token) as server:
        structlog.get_logger("payout").info("embedded_sandbox", url=server.url, db=str(db))
        yield _target(server.url, token, f"embedded sandbox ({db})", settings)


def _target(url: str, token: str, label: str | None, settings: Settings) -> Target:
    """A Target whose ledger identity is settings.target_id (stable across the embedded sandbox's restarts)."""
    return Target(url, token, label=label, identity=settings.target_id)


def entry() -> None:
    """The `payout` console script and `python -m pipeline`: `main` in a process no signal kills half-way.

    It ends with os._exit once its output is flushed: the interpreter's own shutdown would first restore the
    default handlers, and a signal repeated in that last moment would kill it with no exit code of ours.
    """
    latch()
    code = main()
    late = latched()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(128 + late if late and code < 128 else code)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = "debug" if args.verbose else "warning" if args.quiet and args.log_level == "info" else args.log_level
    _say.json = logs.configure_logging(json=True if args.log_json else None, level=level)
    _say.quiet = args.quiet
    progress.set_quiet(args.quiet)
    structlog.contextvars.clear_contextvars()  # an earlier in-process call's run_id/batch_id must not leak in
    # Ledgers, reports and sandbox files are owner-only (0600/0700) whatever the umask: they name users and amounts.
    umask = os.umask(0o077)
    writers = report.EXTRA_WRITERS.set((html_report.write, signoff.write))  # report.html per run; plan.txt per dry run
    try:
        if args.command == "sandbox":
            return _command_code(args, parser)
        with stop_on_signals() as stop:  # one for the whole command: no signal kills it half-way
            code = _command_code(args, parser)
        return 128 + stop.signum if stop.signum and code < 128 else code
    finally:
        os.umask(umask)  # (main also runs in-process, in tests: leave the process as it was)
        report.EXTRA_WRITERS.reset(writers)


def _command_code(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    try:
        if args.command == "sandbox":
            from pipeline.sandbox.cli import run as run_sandbox

            return run_sandbox(args)
        settings = settings_from(args)
        if args.command == "status":
            return _status(args, settings)
        if args.command == "report":
            return _export(args, settings)
        sends = not (args.command == "run" and args.dry_run)
        if sends and not settings.embedded:
            token_from_env(required=True)  # before any folder is made or any ledger is opened
            refuse_plain_http(str(settings.api_url))  # and never in clear to a host other than loopback
        sheets = args.sheets if args.command == "run" else ()
        batch_id = (resolve_batch_id(args.batch_id, settings, sheets, embedded=settings.embedded)
                    if args.command == "run" else "")
        run_recover = _recover_checked(args) if args.command == "recover" else None
        preflight(settings, sheets)
        _announce(settings)
        if sends and args.command in ("run", "retry"):
            _warn_unfinished(settings)
        if args.command == "run":
            if args.dry_run:
                result = run_payout(args.sheets, settings, None, batch_id=batch_id, dry_run=True,
                                    confirm_cents=args.confirm_total)
            else:
                with api_target(settings) as target:
                    result = _waiting(args, lambda: run_payout(args.sheets, settings, target, batch_id=batch_id,
                                                               confirm_cents=args.confirm_total))
        elif args.command == "retry":
            with api_target(settings) as target:
                _check_token(target, settings)
                result = _waiting(args, lambda: retry_failed(settings, target, run_id=args.run_id))
        elif args.command == "audit":
            from pipeline.audit import KINDS, run_audit

            with api_target(settings) as target:
                audited = _waiting(args, lambda: run_audit(settings, target, args.run_id))
            print(f"Audit of {audited.scope} against {target.label or target.api_url}")
            for kind in KINDS:
                print(f"  {kind:<11} {audited.counts[kind]:>9,}")
            print(f"Details: {audited.path}")
            return 0 if audited.all_match else 1
        elif args.command == "recover":
            assert run_recover is not None
            with api_target(settings) as target:
                return _waiting(args, lambda: run_recover(settings, target, since=args.since, until=args.until))
        else:  # pragma: no cover - argparse rejects unknown commands
            parser.error(f"unknown command {args.command}")
        return _finish(result)
    except PayoutError as e:
        message = logs.scrub(str(e))
        advice = next_step(e) if e.exit_code != 2 else None
        text = f"payout: error: {message}" + (f" — {advice}" if advice else "")
        _say("error", text, level="error", message=message, exit_code=e.exit_code, next_step=advice,
             error=type(e).__name__)
        return e.exit_code
    except KeyboardInterrupt:
        _say("interrupted", "payout: interrupted; the ledger is consistent, run the same command again to resume",
             level="warning", exit_code=130)
        return 130


class _Say:
    """Messages for people: plain text on a terminal, one JSON log event off it (a scheduler's log stays JSON)."""

    json = False
    quiet = False

    def __call__(self, event: str, text: str, *, level: str = "info", **fields: Any) -> None:
        if self.json:
            getattr(structlog.get_logger("payout"), level)(event, **fields)
        elif level in ("warning", "error") or not self.quiet:
            print(text, file=sys.stderr)


_say = _Say()


T = TypeVar("T")
LOCK_POLL_S = 2.0
_sleep = time.sleep  # (a test replaces it to let the other run go)


def _waiting(args: argparse.Namespace, work: Callable[[], T]) -> T:
    """`work()`, tried again while another run holds the ledger lock, for up to --lock-timeout seconds.

    Safe to repeat: the lock is taken before anything is recorded or sent, so a refused attempt did nothing."""
    deadline = time.monotonic() + max(0.0, getattr(args, "lock_timeout", 0.0) or 0.0)
    while True:
        try:
            return work()
        except LedgerLocked:
            left = deadline - time.monotonic()
            with stop_on_signals() as stop:  # the command's own: a signal while waiting ends the wait
                stopped = stop.signum is not None
            if left <= 0 or stopped or latched():
                raise
            _say("waiting_for_lock", f"payout: the ledger is in use by another run; waiting up to {left:.0f} s",
                 seconds_left=round(left, 1))
            _sleep(min(LOCK_POLL_S, left))


def _status(args: argparse.Namespace, settings: Settings) -> int:
    """`payout status`: read-only; exit 2 only for a RUN_ID the ledger does not hold."""
    from pipeline import status

    doc = status.collect(settings.ledger, settings.out_dir, args.run_id, max(1, args.last))
    if args.run_id and not doc["runs"]:
        raise UsageError(f"no run {args.run_id} in ledger {settings.ledger_label}")
    print(status.as_json(doc) if args.json else status.format_status(doc))
    return 0


def _export(args: argparse.Namespace, settings: Settings) -> int:
    """`payout report RUN_ID`: read-only; exit 2 for a run with no report (naming the recent ones)."""
    from pipeline import export

    path = export.export_run(settings.out_dir, args.run_id, args.export_format, args.output)
    print(path)
    return 0


def _warn_unfinished(settings: Settings) -> None:
    """A run killed outright (SIGKILL, power loss) writes no report and says nothing: the next run says it."""
    from pipeline.ledger import Ledger

    ledger = Ledger(settings.ledger, lock=False)
    if ledger.path is not None and not ledger.path.exists():
        return
    with ledger:
        last = ledger.latest_run()
    if last is not None and last["finished"] is None:
        _say("previous_run_unfinished", f"payout: run {last['run_id']} (batch {last['batch_id']}) never finished: "
             "it was killed, or is still running; this run resumes its open operations (`payout status` shows it)",
             level="warning", unfinished_run_id=last["run_id"], unfinished_batch_id=last["batch_id"])


def _check_token(target: Target, settings: Settings) -> None:
    """One GET of an operation that does not exist: a refused token raises AuthRefused (exit 3) even when there
    is nothing to resend, so a nightly `payout retry` with a wrong token alerts instead of exiting 0."""
    with make_client(target, settings) as client:
        client.get_operation(f"payout-token-check-{secrets.token_hex(4)}")


def _announce(settings: Settings) -> None:
    """Every run says where its data lives: one plain stderr line and one structured log event (after the
    usage checks, so a refused run prints just its one error line)."""
    _say("data_dir", f"payout: data dir {settings.data_dir} (ledger {settings.ledger_label}, reports "
         f"{settings.out_dir})", data_dir=str(settings.data_dir), ledger=settings.ledger_label,
         reports=str(settings.out_dir), target=settings.target_id)


def _recover_checked(args: argparse.Namespace) -> Callable[..., int]:
    """Check the --since/--until window, then import pipeline.recover lazily (every other command works
    without it) and return its run_recover."""
    if args.since > datetime.now(UTC):
        raise UsageError(f"--since ({args.since:%Y-%m-%d %H:%M} UTC) is in the future")
    if args.until is not None and args.until <= args.since:
        raise UsageError(f"--until ({args.until:%Y-%m-%d %H:%M} UTC) must be after --since "
                         f"({args.since:%Y-%m-%d %H:%M} UTC)")
    try:
        from pipeline.recover import run_recover
    except ModuleNotFoundError as exc:
        if exc.name != "pipeline.recover":
            raise
        raise UsageError("payout recover is not available in this installation (pipeline.recover is missing)") \
            from None
    return run_recover


def _finish(result: RunResult) -> int:
    print(report.format_summary(result.summary))
    if "plan" in result.summary.reports:  # a dry run: the plan to sign off
        print("\n" + Path(result.summary.reports["plan"]).read_text(encoding="utf-8"), end="")
    guarded = result.summary.meta.get("spend_guard") or {}
    if result.summary.meta.get("dry_run") and guarded.get("message"):
        verdict = "a real run would refuse: " if guarded.get("refused") else ""
        print(f"\nSpend guard: {verdict}{guarded['message']}")
    if result.stopped_by is not None:
        message, advice = logs.scrub(str(result.stopped_by)), next_step(result.stopped_by)
        _say("stopped_early", f"\nStopped early: {message}\nNext: {advice}", level="error", message=message,
             next_step=advice, exit_code=result.exit_code, error=type(result.stopped_by).__name__)
    return result.exit_code


if __name__ == "__main__":
    entry()
