"""Small helpers shared by the offline-stage tests: build valid sheet rows and write real files."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pandas as pd


def uid(n: int) -> str:
    """A well-formed Toloka user id (32 lowercase hex), distinct per n."""
    return hashlib.md5(f"user-{n}".encode()).hexdigest()


def row(n: int = 1, **overrides: object) -> dict[str, object]:
    """One valid sheet row as text, with JSON title/message cells."""
    base: dict[str, object] = {
        "user_id": uid(n),
        "amount": "1.50",
        "assignment_id": f"{n:010x}--63bfc4c358d7a46c32a7b233",
        "private_comment": f"week {n}",
        "public_title": json.dumps({"EN": "Great work"}),
        "public_message": json.dumps({"EN": "Thank you!"}),
        "without_message": "false",
    }
    base.update(overrides)
    return base


def write_csv(path: Path, rows: list[dict[str, object]], *, encoding: str = "utf-8") -> Path:
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    with open(path, "w", encoding=encoding, newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return path


def canonical_frame(rows: list[dict[str, object]], source_file: str = "sheet.csv") -> pd.DataFrame:
    """The frame ingest would produce for these rows (no file involved)."""
    from pipeline.ingest import TEXT_COLUMNS

    data = {
        "source_file": pd.Series([source_file] * len(rows), dtype=object),
        "source_row": pd.Series(range(2, len(rows) + 2), dtype="int64"),
    }
    for c in TEXT_COLUMNS:
        data[c] = pd.Series([(None if r.get(c) in (None, "") else str(r.get(c)).strip()) for r in rows], dtype=object)
    return pd.DataFrame(data)


def keyed_rows(rows: list[dict[str, object]], batch_id: str = "b", *, all_valid: bool = False) -> pd.DataFrame:
    """What the offline stages make of these rows: validated (default rules) and keyed for `batch_id`.
    `all_valid` asserts that validation found no problem (the rows are meant to be payable)."""
    from pipeline.keys import assign_row_keys
    from pipeline.validate import ValidationRules, validate_rows

    checked, errors = validate_rows(canonical_frame(rows), ValidationRules())
    assert not all_valid or errors.empty, errors.to_dict("records")
    return assign_row_keys(checked, batch_id)
