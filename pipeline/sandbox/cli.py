"""`payout sandbox`: start the local Toloka-compatible bonus API server."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the sandbox flags to `parser` (so `payout sandbox` can mount them)."""
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: loopback; any other needs --allow-remote)")
    parser.add_argument("--allow-remote", action="store_true",
                        help="listen on a non-loopback --host: anyone who can reach it and knows the token can "
                             "pay play bonuses and change its faults")
    parser.add_argument("--port", type=int, default=8000, help="port (0 picks a free one; default 8000)")
    parser.add_argument("--db", required=True, type=Path, help="SQLite file holding bonuses and operations")
    parser.add_argument("--token", default=None, help="accepted API token (default: env TOLOKA_TOKEN)")
    parser.add_argument("--faults", default=None, help='fault spec, e.g. "http_500=0.1,reset_after_commit=0.05"')
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault random generator")
    parser.add_argument("--unknown-users", type=Path, default=None, help="file of user ids (one a line) that do not exist")
    parser.add_argument("--rate-limit", type=int, default=300, help="requests per second before 429 (default 300)")
    parser.add_argument("--daily-quota", type=int, default=10_000, help="POST /user-bonuses per UTC day (default 10000)")
    parser.add_argument("--max-async-items", type=int, default=10_000, help="items per async POST before 413")
    parser.add_argument("--max-sync-items", type=int, default=100, help="items per sync POST before 413 (default 100)")
    parser.add_argument("--min-amount", default="0.005", help="smallest bonus in USD (default 0.005)")
    parser.add_argument("--max-amount", default="100", help="largest bonus in USD (default 100)")


def build_sandbox(args: argparse.Namespace) -> Any:
    """A Sandbox from parsed flags; raise ValueError on a bad flag value."""
    from .app import Sandbox  # the server's modules load only when a server starts
    from .faults import FaultSpec
    from .server import make_limits

    if not getattr(args, "allow_remote", False) and not _loopback(args.host):
        raise ValueError(f"--host {args.host} is not loopback: the sandbox would be reachable from the network; "
                         "pass --allow-remote if that is meant")
    token = args.token or os.environ.get("TOLOKA_TOKEN")
    if not token:
        raise ValueError("no token: pass --token or set TOLOKA_TOKEN")
    unknown: set[str] = set()
    if args.unknown_users is not None:
        unknown = {line.strip() for line in args.unknown_users.read_text().splitlines() if line.strip()}
    limits = make_limits(
        unknown, rate_limit=args.rate_limit, daily_quota=args.daily_quota, max_async_items=args.max_async_items,
        max_sync_items=args.max_sync_items, min_amount=args.min_amount, max_amount=args.max_amount,
    )
    return Sandbox(args.db, token, FaultSpec.parse(args.faults), args.seed, limits)


def _loopback(host: str) -> bool:
    import ipaddress

    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> int:
    """Run the sandbox in the foreground until SIGINT/SIGTERM; 2 on bad flags."""
    parser = argparse.ArgumentParser(prog="payout sandbox", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run(args)


def run(args: argparse.Namespace) -> int:
    """Run with already-parsed flags (for a parent CLI that mounted add_arguments)."""
    try:
        sandbox = build_sandbox(args)
    except (ValueError, ArithmeticError, OSError) as exc:
        print(f"payout sandbox: {exc}", file=sys.stderr)
        return 2

    from .server import run_forever

    def announce(url: str) -> None:
        print(f"sandbox listening on {url} (db {args.db})", flush=True)

    return run_forever(sandbox, args.host, args.port, announce)
