"""`payout`: the command line. One `except PayoutError` turns every known failure into a message and exit code."""

from __future__ import annotations

import argparse
import contextlib
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import structlog

from pipeline import logs, report
from pipeline.config import Settings, load_settings, token_from_env
from pipeline.errors import PayoutError
from pipeline.run import RunResult, Target, retry_failed, run_payout

EXIT_CODES = """exit codes:
  0  every valid row is paid
  1  finished, but some rows failed, were invalid or duplicate, or are pending (report written)
  2  bad usage, configuration or unreadable sheet
  3  API unreachable, token refused, or request quota spent (rows left pending; re-run later)
  4  another payout run holds the ledger lock
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="payout",
        description="Pay Toloka bonuses from finance sheets exactly once, and report what happened to every row.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXIT_CODES,
    )
    parser.add_argument("--log-json", action="store_true", help="JSON log lines even on a terminal")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run", help="validate, dedupe, pay and report one batch of sheets",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXIT_CODES,
        description="Read the sheets, validate every row, drop conflicts and rows already paid, pay the rest "
                    "through asynchronous bulk operations, and write OUT/<run_id>/{rows,operations}.parquet and "
                    "summary.json. Safe to run again on the same sheet: paid rows are never paid twice.")
    run.add_argument("sheets", nargs="+", metavar="SHEET", help="CSV, Parquet or Excel (.xlsx) payout sheets")
    _target_args(run)
    run.add_argument("--batch-id", help="names this payout batch; row keys depend on it "
                                        "(default: the sheet names, e.g. 'payouts')")
    run.add_argument("--dry-run", action="store_true",
                     help="validate, dedupe and plan; write the report with status 'planned'; send nothing")
    run.add_argument("--chunk-size", type=int, help="bonuses per asynchronous operation (default 5000)")
    run.add_argument("--concurrency", type=int, help="operations in flight at once (default 4)")
    run.add_argument("--dedupe-policy", choices=["keep-first", "reject-all"],
                     help="what to do with rows Toloka would reject as identical (default keep-first)")

    retry = sub.add_parser(
        "retry", help="re-submit failed (retryable) and pending rows from the ledger, without the sheet",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXIT_CODES,
        description="Resume operations left in flight and re-submit rows whose last attempt failed with a "
                    "retryable error, under a new operation id. Rows that failed validation at Toloka are "
                    "not retried: fix the sheet and `payout run` it again.")
    retry.add_argument("--run", dest="run_id", help="only rows of this run (default: all in the ledger)")
    _target_args(retry)

    from pipeline.sandbox.cli import add_arguments as sandbox_arguments

    sandbox = sub.add_parser("sandbox", help="start the local Toloka-compatible API server",
                             description="A local server that speaks Toloka's user-bonuses and operations API, "
                                         "with fault injection. See README 'Sandbox'.")
    sandbox_arguments(sandbox)

    from pipeline.audit import add_arguments as audit_arguments

    audit = sub.add_parser("audit", help="reconcile the ledger against the server's own list of bonuses",
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           description="Checks that every bonus the ledger calls paid exists on the server with "
                                       "the same user and amount, and that the server holds no bonus for the "
                                       "batch's users in its time window that the ledger does not know. "
                                       "Exit 0 only when everything matches.")
    _target_args(audit)
    audit_arguments(audit)
    return parser


def _target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", default="local", choices=["local", "sandbox", "production"],
                   help="local (default): an embedded sandbox server on loopback, no token needed; "
                        "sandbox/production: Toloka's hosts from configs/, token from TOLOKA_TOKEN")
    p.add_argument("--api-url", help="any Toloka-compatible server (e.g. a separately started `payout sandbox`); "
                                     "token from TOLOKA_TOKEN")
    p.add_argument("--config", type=Path, help="a TOML file overriding configs/<env>.toml")
    p.add_argument("--ledger", type=Path, help="SQLite ledger (default per env, from configs/<env>.toml: production "
                                                    "data/ledger.sqlite; each env has its own so play payouts never mark "
                                                    "real rows paid)")
    p.add_argument("--out", type=Path, help="report folder root (default data/reports)")


def settings_from(args: argparse.Namespace) -> Settings:
    return load_settings(
        args.env, args.config, api_url=args.api_url, ledger_path=args.ledger, out_dir=args.out,
        chunk_size=getattr(args, "chunk_size", None), concurrency=getattr(args, "concurrency", None),
        dedupe_policy=getattr(args, "dedupe_policy", None))


@contextlib.contextmanager
def api_target(settings: Settings) -> Iterator[Target]:
    """The embedded sandbox for env local without --api-url; otherwise the configured URL and TOLOKA_TOKEN."""
    if settings.api_url:
        token = token_from_env(required=True)
        assert token is not None
        logs.set_secret(token)
        yield Target(settings.api_url, token)
        return
    from pipeline.sandbox import SandboxServer

    token = secrets.token_urlsafe(16)
    db = Path(settings.ledger_path).parent / "sandbox.sqlite"
    with SandboxServer(db, token=token) as server:
        structlog.get_logger("payout").info("embedded_sandbox", url=server.url, db=str(db))
        yield Target(server.url, token, label=f"embedded sandbox ({db})")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.configure_logging(json=True if args.log_json else None, level=args.log_level)
    try:
        if args.command == "sandbox":
            from pipeline.sandbox.cli import run as run_sandbox

            return run_sandbox(args)
        settings = settings_from(args)
        if args.command == "run":
            if args.dry_run:
                result = run_payout(args.sheets, settings, None, batch_id=args.batch_id, dry_run=True)
            else:
                with api_target(settings) as target:
                    result = run_payout(args.sheets, settings, target, batch_id=args.batch_id)
        elif args.command == "retry":
            with api_target(settings) as target:
                result = retry_failed(settings, target, run_id=args.run_id)
        elif args.command == "audit":
            from pipeline.audit import run_audit

            with api_target(settings) as target:
                return run_audit(settings, target, args)
        else:  # pragma: no cover - argparse rejects unknown commands
            parser.error(f"unknown command {args.command}")
        return _finish(result)
    except PayoutError as e:
        print(f"payout: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("payout: interrupted; the ledger is consistent, run the same command again to resume",
              file=sys.stderr)
        return 130


def _finish(result: RunResult) -> int:
    print(report.format_summary(result.summary))
    if result.stopped_by is not None:
        print(f"\nStopped early: {result.stopped_by}", file=sys.stderr)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
