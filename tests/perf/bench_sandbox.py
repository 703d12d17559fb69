"""Sandbox throughput: async bonus creation and listing, against a real `python -m pipeline.sandbox` process."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import requests

REPO = Path(__file__).resolve().parents[2]
TOKEN = "bench"


def start_server(db: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.sandbox", "--port", "0", "--db", str(db), "--token", TOKEN,
         "--rate-limit", "1000000", "--daily-quota", "1000000"],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    return proc, line.split("listening on ", 1)[1].split()[0]


def op_body(op_no: int, size: int) -> bytes:
    return orjson.dumps([
        {"user_id": f"{op_no * size + i:032x}", "amount": 0.01 * (1 + i % 500), "without_message": False,
         "public_title": {"EN": "Thanks"}, "public_message": {"EN": "Good work"}, "private_comment": f"bench {op_no}",
         "__item_idx": f"{op_no}-{i}"}
        for i in range(size)
    ])


def create(url: str, total: int, size: int, workers: int) -> float:
    """Seconds to submit total/size async operations and see every one SUCCESS."""
    bodies = [op_body(n, size) for n in range(total // size)]
    headers = {"Authorization": f"OAuth {TOKEN}", "Content-Type": "application/json"}

    def run(body: bytes) -> None:
        with requests.Session() as session:
            op = session.post(f"{url}/api/v1/user-bonuses?async_mode=true&skip_invalid_items=true",
                              data=body, headers=headers).json()
            while op["status"] not in ("SUCCESS", "FAIL"):
                time.sleep(0.005)
                op = session.get(f"{url}/api/v1/operations/{op['id']}", headers=headers).json()
            assert op["details"]["success_count"] == size, op

    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(run, bodies))
    return time.perf_counter() - started


def list_all(url: str) -> tuple[int, float]:
    """(items, seconds) to page through every bonus at limit=300, as toloka-kit does (sort=id, id_gt)."""
    params: dict[str, object] = {"sort": "id", "limit": 300}
    count = 0
    started = time.perf_counter()
    with requests.Session() as session:
        session.headers["Authorization"] = f"OAuth {TOKEN}"
        while True:
            page = orjson.loads(session.get(f"{url}/api/v1/user-bonuses", params=params).content)
            count += len(page["items"])
            if not page["has_more"]:
                return count, time.perf_counter() - started
            params["id_gt"] = page["items"][-1]["id"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bonuses", type=int, default=100_000)
    parser.add_argument("--op-size", type=int, default=5_000)
    parser.add_argument("--workers", type=int, default=2, help="concurrent client threads")
    parser.add_argument("--out", type=Path, default=REPO / "tests/perf/results/sandbox.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(Path(tmp) / "bench.sqlite")
        try:
            create_s = create(url, args.bonuses, args.op_size, args.workers)
            listed, list_s = list_all(url)
        finally:
            proc.terminate()
            proc.wait()
    created = args.bonuses // args.op_size * args.op_size
    results = {
        "async_create": {"bonuses": created, "op_size": args.op_size, "seconds": round(create_s, 3),
                         "bonuses_per_s": round(created / create_s)},
        "list": {"items": listed, "limit": 300, "seconds": round(list_s, 3), "items_per_s": round(listed / list_s)},
    }
    print(f"{'measure':<16}{'items':>10}{'seconds':>10}{'items/s':>12}")
    print(f"{'async create':<16}{created:>10}{create_s:>10.2f}{created / create_s:>12,.0f}")
    print(f"{'list (300/page)':<16}{listed:>10}{list_s:>10.2f}{listed / list_s:>12,.0f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
