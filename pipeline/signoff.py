"""The plan a finance person signs off before a real run: what `payout run --dry-run` prints and writes to
plan.txt beside the report — rows to pay, distinct users, the total, the largest bonuses, the rows that will not
be paid (duplicates, invalid, held, already paid, the sheet's own control totals) with reasons, the first few of
each, and how the sheets were read (encoding, header row, hidden rows, carried columns).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.contract import counted
from pipeline.money import format_usd
from pipeline.report import Summary, row_reason

FIRST = 5  # rows named per list; the report has them all
NAME = "plan.txt"


def write(run_dir: Path, summary: Summary, rows: pd.DataFrame, operations: pd.DataFrame) -> dict[str, str]:
    """report.EXTRA_WRITERS hook: only for a dry run, write run_dir/plan.txt and name it."""
    if not summary.meta.get("dry_run"):
        return {}
    path = Path(run_dir) / NAME
    tmp = path.with_name(f".{NAME}.tmp")
    tmp.write_text(render(summary, rows, run_dir) + "\n", encoding="utf-8")
    tmp.replace(path)
    return {"plan": str(path)}


def render(summary: Summary, rows: pd.DataFrame, run_dir: Path) -> str:
    """The plan as text."""
    meta = summary.meta
    # only the columns the plan shows: a 1M-row dry run copies no keys or ids to filter
    rows = rows[["source_file", "source_row", "user_id", "amount_cents", "status", "errors", "note"]]
    at = rows.groupby("status", sort=False).indices  # one pass over 1M statuses, not one comparison per status
    to_pay = rows.iloc[at.get("planned", [])]
    cents = to_pay["amount_cents"].astype("Int64").fillna(0).astype("int64")  # (a planned row always has one)
    lines = [f"Payout plan for batch {meta.get('batch_id')} (dry run {meta.get('run_id')}: nothing was sent)",
             f"  To pay:  {counted(len(to_pay), 'row')}  {to_pay['user_id'].nunique():,} distinct users  "
             f"total {format_usd(int(cents.sum()))}"]
    if len(to_pay):
        lines.append(f"  Largest bonuses (of {len(to_pay):,}):")
        for r in to_pay.assign(cents=cents).nlargest(FIRST, "cents").itertuples(index=False):
            lines.append(f"    {format_usd(int(r.cents)):>14}  user {r.user_id}  {_where(r)}")
    for status, title in (("duplicate", "Duplicates (not paid)"), ("invalid", "Invalid (not paid)"),
                          ("held_repeat", "Held as repeats of recent payments (not paid)"),
                          ("already_paid", "Already paid earlier (not paid again)"),
                          ("control_total", "Control totals of the sheet (checked, not paid)")):
        part = rows.iloc[at.get(status, [])]
        if not len(part):
            continue
        total = part["amount_cents"].dropna().astype("int64").sum()
        lines.append(f"  {title}: {counted(len(part), 'row')}, {format_usd(int(total))}")
        for r in part.head(FIRST).itertuples(index=False):
            lines.append(f"    {_where(r)}: {row_reason(r.errors, r.note) or status}")
        if len(part) > FIRST:
            lines.append(f"    … {len(part) - FIRST:,} more")
    lines.extend(f"  Sheet: {notice}" for notice in meta.get("sheet_notices") or ())
    if meta.get("recovery", {}).get("error"):
        lines.append(f"  Note: {meta['recovery']['error']}")
    lines.append(f"  Full list: {Path(run_dir) / 'rows.parquet'} (status column), or {Path(run_dir) / 'report.html'}")
    return "\n".join(lines)



def _where(r: Any) -> str:
    return f"{Path(str(r.source_file)).name} row {r.source_row}"


