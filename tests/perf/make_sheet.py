"""Generate a realistic finance sheet of N bonus rows (CSV and Parquet) for timing the offline stages.

Mix: ~1% invalid rows (bad user id, 3-decimal amount, amount 0 or 150, bad JSON title, broken
without_message rule) and ~1% duplicates of earlier rows by Toloka's 409 rule. Deterministic per seed.

    python tests/perf/make_sheet.py --rows 1000000 --out /tmp/perf
    python tests/perf/make_sheet.py --rows 1000000 --out /tmp/perf --time   # also time the stages
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

TITLES = [{"EN": "Great work"}, {"EN": "Bonus", "RU": "Бонус"}, {"EN": "Thanks!", "TR": "Teşekkürler"}]
MESSAGES = [
    {"EN": "Thank you for the careful labelling."},
    {"EN": "Extra reward for quality", "RU": "Доплата за качество"},
    {"EN": "Weekly top performer"},
]
AMOUNTS = ["0.5", "0.50", "1", "1.5", "2.25", "$3", "10", "0.05", "99.99", "100", "7.1"]


def make_frame(rows: int, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n_users = max(rows // 20, 10)
    hi, lo = rng.integers(0, 2**63, n_users, dtype=np.int64), rng.integers(0, 2**63, n_users, dtype=np.int64)
    users = np.array([f"{a:016x}{b:016x}" for a, b in zip(hi, lo)], dtype=object)
    user = users[rng.integers(0, n_users, rows)]
    amount = np.array(AMOUNTS, dtype=object)[rng.integers(0, len(AMOUNTS), rows)]
    t_texts = np.array([json.dumps(t, ensure_ascii=False) for t in TITLES], dtype=object)
    m_texts = np.array([json.dumps(m, ensure_ascii=False) for m in MESSAGES], dtype=object)
    title = t_texts[rng.integers(0, len(TITLES), rows)]
    message = m_texts[rng.integers(0, len(MESSAGES), rows)]
    comment = np.array([f"project {p} week {w}" for p, w in zip(rng.integers(1, 400, rows), rng.integers(1, 53, rows))], dtype=object)
    assignment = np.array(
        [f"{a:010x}--{b:024x}" for a, b in zip(rng.integers(0, 2**40, rows), rng.integers(0, 2**62, rows))],
        dtype=object,
    )
    without = np.full(rows, "false", dtype=object)
    quiet = rng.random(rows) < 0.05
    without[quiet] = "true"
    title[quiet] = ""
    message[quiet] = ""

    # ~1% invalid, spread over the kinds of mistakes finance sheets really contain
    bad = np.flatnonzero(rng.random(rows) < 0.01)
    kinds = rng.integers(0, 6, len(bad))
    for i, k in zip(bad, kinds):
        if k == 0:
            user[i] = user[i][:31] + "Z"
        elif k == 1:
            amount[i] = "1.234"
        elif k == 2:
            amount[i] = "0"
        elif k == 3:
            amount[i] = "150"
        elif k == 4:
            title[i] = '{"EN": "unterminated'
            without[i] = "false"
        else:
            without[i] = "true"
            title[i] = t_texts[0]

    frame = pd.DataFrame(
        {
            "user_id": user,
            "amount": amount,
            "assignment_id": assignment,
            "private_comment": comment,
            "public_title": title,
            "public_message": message,
            "without_message": without,
        }
    )
    # ~1% duplicates: copy the 409 identity of an earlier row (another assignment, same bonus)
    dup = np.flatnonzero(rng.random(rows) < 0.01)
    dup = dup[dup > 0]
    src = (rng.random(len(dup)) * dup).astype(np.int64)
    for c in ("user_id", "amount", "private_comment", "public_title", "public_message", "without_message"):
        frame.loc[dup, c] = frame[c].to_numpy()[src]
    return frame


def write(frame: pd.DataFrame, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    n = len(frame)
    csv_path, pq_path = out / f"sheet_{n}.csv", out / f"sheet_{n}.parquet"
    frame.to_csv(csv_path, index=False)
    frame.to_parquet(pq_path, index=False)
    return csv_path, pq_path


def time_stages(path: Path, chunk_size: int = 10_000) -> dict[str, float]:
    """Wall time of each offline stage on one sheet (seconds)."""
    from pipeline.dedupe import find_duplicates
    from pipeline.ingest import read_sheets
    from pipeline.keys import assign_row_keys
    from pipeline.plan import plan_chunks
    from pipeline.validate import ValidationRules, validate_rows

    t = {}
    t0 = time.perf_counter()
    frame = read_sheets([path])
    t["ingest"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    checked, errors = validate_rows(frame, ValidationRules())
    t["validate"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    keyed = assign_row_keys(checked, "perf-batch")
    t["keys"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    unique, dups = find_duplicates(keyed[keyed["is_valid"]])
    t["dedupe"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    plan = plan_chunks(unique, "perf-batch", chunk_size)
    t["plan"] = time.perf_counter() - t0
    t["total"] = sum(t.values())
    print(
        f"{path.name}: rows={len(frame)} errors={len(errors)} invalid_rows={int((~checked['is_valid']).sum())} "
        f"duplicates={len(dups)} to_pay={len(plan)} chunks={plan['chunk_no'].nunique()}"
    )
    print("  " + "  ".join(f"{k}={v:.2f}s" for k, v in t.items()))
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--time", action="store_true", help="time ingest/validate/keys/dedupe/plan on both files")
    args = ap.parse_args()
    t0 = time.perf_counter()
    paths = write(make_frame(args.rows, args.seed), args.out)
    print(f"wrote {paths[0]} and {paths[1]} in {time.perf_counter() - t0:.1f}s")
    if args.time:
        for p in paths:
            time_stages(p)


if __name__ == "__main__":
    main()
