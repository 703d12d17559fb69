"""`payout status`: what happened last night, from the ledger (and each run's summary.json when it exists),
without opening Parquet files: when, target, batch, sheets, rows per status, totals, open operations, next step.

The ledger is the truth for what was sent and paid; a run killed before its report still shows there, with
"did not finish" as its next step.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pipeline.ledger import Ledger
from pipeline.money import format_usd

SHOWN_ROWS = 5  # invalid rows named in a next step; the report names them all


def collect(location: str | Path, out_dir: Path, run_id: str | None = None, limit: int = 5) -> dict[str, Any]:
    """{ledger, target, open_operations, runs: [...]} newest first; runs is empty when the ledger does not exist."""
    ledger = Ledger(location, lock=False)
    doc: dict[str, Any] = {"ledger": ledger.label, "target": None, "open_operations": 0, "runs": []}
    if ledger.path is not None and not ledger.path.exists():  # never create a ledger just to say there is none
        return doc
    with ledger:
        doc["target"] = ledger.get_meta("target")
        open_ops = ledger.open_operations()
        doc["open_operations"] = len(open_ops)
        for run in ledger.recent_runs(limit, run_id):
            run_dir = out_dir / run["run_id"]
            summary = _summary(run_dir)
            states = ledger.run_row_states(run["run_id"])
            ops = ledger.run_operation_states(run["run_id"])
            mine_open = sum(1 for op in open_ops if op.run_id == run["run_id"])
            entry = {
                "run_id": run["run_id"], "kind": run["kind"], "batch_id": run["batch_id"],
                "started": run["started"], "finished": run["finished"], "outcome": run["outcome"],
                "env": run["meta"].get("env"), "sheets": run["meta"].get("sheets", []),
                "retry_of": run["meta"].get("of_run"),
                "sheet_rows": run["sheet_rows"], "to_plan": run["to_plan"], "planned": run["planned"],
                "ledger_rows": {s: v["rows"] for s, v in states.items()},
                "ledger_amounts": {s: _usd(v["cents"]) for s, v in states.items()},
                "operations": ops, "open_operations": mine_open,
                "counts": {s: n for s, n in summary["counts"].items() if n} if summary else None,
                "amount_paid": _usd(states.get("paid", {}).get("cents", 0)),
                "report": str(run_dir) if summary else None,
            }
            entry["next_step"] = next_step(entry, summary, states, run_dir)
            doc["runs"].append(entry)
    return doc


def next_step(run: dict[str, Any], summary: dict[str, Any] | None, states: dict[str, dict[str, int]],
              run_dir: Path) -> str:
    """The operator's next step in words, most urgent first."""
    steps: list[str] = []
    if run["finished"] is None:
        steps.append("the run did not finish (killed, or still running): run the same command again to resume; "
                     "nothing is paid twice")
    if run["open_operations"]:
        steps.append(f"{run['open_operations']} operation(s) still open: re-run (or `payout retry`) to resume them")
    if summary and summary.get("next_step") and run["finished"] is not None:
        steps.append(summary["next_step"])
    unknown = states.get("unknown", {}).get("rows", 0)
    if unknown:
        steps.append(f"{unknown} row(s) of unknown outcome: run `payout audit --run {run['run_id']}`")
    counts = (summary or {}).get("counts", {})
    if counts.get("invalid"):
        steps.append(f"fix {_invalid_rows(run_dir, counts['invalid'])} and re-run")
    retryable = states.get("failed", {}).get("retryable", 0)
    if retryable:
        steps.append(f"{retryable} failed row(s) can be re-sent: `payout retry --run {run['run_id']}`")
    if counts.get("pending") and not steps:
        steps.append(f"{counts['pending']} row(s) pending: re-run to resume")
    if counts.get("held_repeat"):
        steps.append(f"{counts['held_repeat']} row(s) held as repeats: re-run with --allow-repeats if meant")
    if summary is None and run["finished"] is not None:
        steps.append(f"no report at {run_dir} (another --out?)")
    return "; ".join(steps) if steps else "nothing to do: every row is accounted for"


def _invalid_rows(run_dir: Path, count: int) -> str:
    """"rows 12, 40 of p.csv" from the run's report (first few), else just the count."""
    try:
        table = pq.read_table(run_dir / "rows.parquet", columns=["source_file", "source_row", "status"],
                              filters=[("status", "=", "invalid")])
    except (OSError, ValueError):
        return f"{count} invalid row(s) (see the report)"
    shown = table.slice(0, SHOWN_ROWS).to_pylist()
    by_file: dict[str, list[str]] = {}
    for r in shown:
        by_file.setdefault(Path(str(r["source_file"])).name, []).append(str(r["source_row"]))
    where = "; ".join(f"row{'s' if len(v) > 1 else ''} {', '.join(v)} of {f}" for f, v in by_file.items())
    more = f" (and {count - len(shown)} more in {run_dir / 'rows.parquet'})" if count > len(shown) else ""
    return where + more


def format_status(doc: dict[str, Any]) -> str:
    """Plain text for the person on call."""
    if not doc["runs"]:
        return f"No runs in ledger {doc['ledger']}" + ("" if Path(doc["ledger"]).exists() else " (it does not exist)")
    lines = [f"Ledger {doc['ledger']}  target {doc['target']}  open operations {doc['open_operations']}"]
    for run in doc["runs"]:
        head = f"{run['kind']} {run['run_id']}"
        if run["batch_id"]:
            head += f"  batch {run['batch_id']}"
        lines += ["", head,
                  f"  started {run['started']}  finished {run['finished'] or '— (did not finish)'}"]
        if run["sheets"]:
            lines.append(f"  sheets  {', '.join(run['sheets'])}")
        counts = run["counts"] if run["counts"] is not None else run["ledger_rows"]
        source = "report" if run["counts"] is not None else "ledger (no report)"
        lines.append(f"  rows ({source}): " + (", ".join(f"{k} {v:,}" for k, v in counts.items()) or "none"))
        lines.append(f"  paid {run['amount_paid']}  operations " +
                     (", ".join(f"{k} {v}" for k, v in run["operations"].items()) or "none") +
                     f"  open {run['open_operations']}")
        if run["report"]:
            lines.append(f"  report  {run['report']}")
        lines.append(f"  next:   {run['next_step']}")
    return "\n".join(lines)


def as_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True, default=str)


def _summary(run_dir: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _usd(cents: int) -> str:
    return format_usd(int(cents))
