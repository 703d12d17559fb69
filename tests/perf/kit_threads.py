"""The payout script a user would write with toloka-kit 1.2.3 and 4 threads: 4 operations in flight (P2 baseline 2).

Reads the sheet with pandas, builds one `UserBonus` per row, cuts 5,000-row chunks, and lets a pool of 4 threads
share one client: each thread calls `create_user_bonuses_async` + `wait_operation` for one chunk at a time.

    python tests/perf/kit_threads.py SHEET --url http://127.0.0.1:8000 --token TOKEN [--chunk-size 5000] [--threads 4]

Prints bonuses/s; `--json FILE` also writes the figures. `retries=0`: see kit_sequential.py.
"""

import time

STARTED = time.perf_counter()

import os  # noqa: E402
import sys  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kit_sequential import parser, read_bonuses, report  # noqa: E402  (the same sheet reading and figures)
from toloka.client import TolokaClient  # noqa: E402
from toloka.client.user_bonus import UserBonus  # noqa: E402


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--threads", type=int, default=4)
    args = ap.parse_args()

    t0 = time.perf_counter()
    bonuses = read_bonuses(args.sheet)
    t1 = time.perf_counter()
    client = TolokaClient(args.token, url=args.url, retries=0)
    chunks = [bonuses[i:i + args.chunk_size] for i in range(0, len(bonuses), args.chunk_size)]

    def pay(chunk: list[UserBonus]) -> int:
        op = client.create_user_bonuses_async(chunk, skip_invalid_items=True)
        return client.wait_operation(op, disable_progress=True).details.success_count

    with ThreadPoolExecutor(args.threads) as pool:
        success = sum(pool.map(pay, chunks))
    report(args, {"script": "kit_threads", "threads": args.threads}, len(bonuses), success, t0, t1, STARTED)

if __name__ == "__main__":
    main()
