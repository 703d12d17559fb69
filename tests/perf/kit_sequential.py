"""The payout script a user would write with toloka-kit 1.2.3: one operation at a time (P2 baseline 1).

Reads the sheet with pandas, builds one `UserBonus` per row, then for each 5,000-row chunk calls
`create_user_bonuses_async` and `wait_operation` before sending the next one. No ledger, no report.

    python tests/perf/kit_sequential.py SHEET --url http://127.0.0.1:8000 --token TOKEN [--chunk-size 5000]

Prints bonuses/s; `--json FILE` also writes {"success": n, "seconds": ..., "read_s": ..., "build_s": ...}.
`retries=0`: toloka-kit 1.2.3's own retrying cannot handle the 429 answers a rate-limited server gives.
"""

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
from decimal import Decimal  # noqa: E402

import pandas as pd  # noqa: E402
from toloka.client import TolokaClient  # noqa: E402
from toloka.client.user_bonus import UserBonus  # noqa: E402


def read_bonuses(sheet: str) -> list[UserBonus]:
    """One UserBonus per sheet row: JSON titles/messages, "$1.50" or "1.5" amounts, true/false flags."""
    frame = pd.read_parquet(sheet) if sheet.endswith(".parquet") else pd.read_csv(sheet, dtype=str,
                                                                                   keep_default_na=False)
    frame = frame.fillna("")
    bonuses = []
    for row in frame.itertuples(index=False):
        quiet = row.without_message.strip().lower() == "true"
        bonuses.append(UserBonus(
            user_id=row.user_id,
            amount=Decimal(row.amount.replace("$", "")),
            private_comment=row.private_comment or None,
            assignment_id=row.assignment_id or None,
            without_message=quiet,
            public_title=None if quiet else json.loads(row.public_title),
            public_message=None if quiet else json.loads(row.public_message),
        ))
    return bonuses


def parser(doc: str) -> argparse.ArgumentParser:
    """The arguments both kit scripts take (a user's script: the sheet, the server, the chunk size)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("sheet")
    ap.add_argument("--url", required=True)
    ap.add_argument("--token", default=os.environ.get("TOLOKA_TOKEN"))
    ap.add_argument("--chunk-size", type=int, default=5000)
    ap.add_argument("--json", help="write the figures to this file")
    return ap


def main() -> None:
    args = parser(__doc__).parse_args()

    t0 = time.perf_counter()
    bonuses = read_bonuses(args.sheet)
    t1 = time.perf_counter()
    client = TolokaClient(args.token, url=args.url, retries=0)
    success = 0
    for start in range(0, len(bonuses), args.chunk_size):
        op = client.create_user_bonuses_async(bonuses[start:start + args.chunk_size], skip_invalid_items=True)
        op = client.wait_operation(op, disable_progress=True)
        success += op.details.success_count
    report(args, {"script": "kit_sequential"}, len(bonuses), success, t0, t1)


def report(args, figures: dict, rows: int, success: int, t0: float, t1: float, started: float = STARTED) -> None:
    """Print bonuses/s (timed from the interpreter's start) and, with --json, write the figures."""
    done = time.perf_counter()
    figures.update({"rows": rows, "success": success, "seconds": round(done - started, 3),
                    "imports_s": round(t0 - started, 3), "read_and_build_s": round(t1 - t0, 3),
                    "pay_s": round(done - t1, 3), "bonuses_per_s": round(success / (done - started))})
    print(f"{success:,} bonuses in {done - started:.2f} s: {figures['bonuses_per_s']:,} bonuses/s "
          f"(pay {done - t1:.2f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f)

if __name__ == "__main__":
    main()
