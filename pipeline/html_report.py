"""report.html: one page per run for the finance person — counts, totals, problem rows with reasons, the
operation timeline. Offline by construction: no script, no external asset (a CSP forbids any), every cell escaped,
so a sheet cell like `<img src=//x>` is shown, never loaded.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.contract import NEEDS_ATTENTION
from pipeline.money import format_usd
from pipeline.report import LABELS, STATUSES, Summary, row_reason

MAX_PROBLEM_ROWS = 500  # the page stays small; rows.parquet has them all
NAME = "report.html"

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}
table{border-collapse:collapse;margin:4px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#eef}td.n{text-align:right;font-variant-numeric:tabular-nums}
.meta td{border:none;padding:1px 12px 1px 0}.bad{background:#fdd}.ok{background:#dfd}.warn{background:#ffd}
.bar{background:#69c;height:10px;display:inline-block;min-width:2px}.track{width:300px;background:#eee}
.next{border-left:4px solid #c60;padding:4px 10px;background:#fff4e5}
"""
CSP = "default-src 'none'; style-src 'unsafe-inline'"


def write(run_dir: Path, summary: Summary, rows: pd.DataFrame, operations: pd.DataFrame) -> dict[str, str]:
    """report.EXTRA_WRITERS hook: write run_dir/report.html (atomically) and name it."""
    path = Path(run_dir) / NAME
    tmp = path.with_name(f".{NAME}.tmp")
    tmp.write_text(render(summary, rows, operations), encoding="utf-8")
    tmp.replace(path)
    return {"html": str(path)}


def render(summary: Summary, rows: pd.DataFrame, operations: pd.DataFrame) -> str:
    """The whole page as text."""
    meta = summary.meta
    title = f"Payout run {meta.get('run_id')}" + (" (dry run: nothing sent)" if meta.get("dry_run") else "")
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        _meta_table(meta),
    ]
    if meta.get("next_step") or meta.get("stopped_by"):
        parts.append(f'<p class="next"><b>Stopped early:</b> {_e(meta.get("stopped_by"))}<br>'
                     f'<b>Next:</b> {_e(meta.get("next_step"))}</p>')
    parts += ["<h2>Rows and amounts</h2>", _counts_table(summary), _problems(rows), _timeline(operations)]
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _meta_table(meta: dict[str, Any]) -> str:
    keys = ("batch_id", "env", "api_url", "started", "finished", "duration_s", "ledger", "retry_of")
    cells = "".join(f"<tr><td>{_e(k)}</td><td>{_e(meta[k])}</td></tr>" for k in keys if meta.get(k) is not None)
    return f'<table class="meta">{cells}</table>'


def _counts_table(summary: Summary) -> str:
    out = ["<table><tr><th>status</th><th>rows</th><th>amount</th></tr>"]
    for status in STATUSES:
        n = summary.counts.get(status, 0)
        if n:
            cls = "ok" if status in ("paid", "already_paid", "planned") else "bad" if status in NEEDS_ATTENTION else ""
            out.append(f'<tr class="{cls}"><td>{_e(LABELS[status])}</td><td class="n">{n:,}</td>'
                       f'<td class="n">{_e(format_usd(summary.cents.get(status, 0)))}</td></tr>')
    out.append(f'<tr><th>Total</th><th class="n">{summary.rows_total:,}</th><th></th></tr></table>')
    return "".join(out)


def _problems(rows: pd.DataFrame) -> str:
    problems = rows[rows["status"].isin(NEEDS_ATTENTION)]
    if not len(problems):
        return "<h2>Problem rows</h2><p>None.</p>"
    shown = problems.head(MAX_PROBLEM_ROWS)
    out = [f"<h2>Problem rows ({len(problems):,})</h2>",
           "<table><tr><th>file</th><th>row</th><th>user</th><th>amount</th><th>status</th><th>reason</th></tr>"]
    for r in shown.itertuples(index=False):
        cents = r.amount_cents
        amount = "" if cents is None or pd.isna(cents) else format_usd(int(cents))
        out.append(f"<tr><td>{_e(Path(str(r.source_file)).name)}</td><td class=\"n\">{_e(r.source_row)}</td>"
                   f"<td>{_e(r.user_id)}</td><td class=\"n\">{_e(amount)}</td><td>{_e(LABELS.get(r.status, r.status))}"
                   f"</td><td>{_e(row_reason(r.errors, r.note))}</td></tr>")
    out.append("</table>")
    if len(problems) > len(shown):
        out.append(f"<p>… and {len(problems) - len(shown):,} more: see rows.parquet beside this page.</p>")
    return "".join(out)




def _timeline(operations: pd.DataFrame) -> str:
    if not len(operations):
        return "<h2>Operations</h2><p>None sent.</p>"
    ops = operations.reindex(columns=["operation_id", "chunk_no", "attempt", "status", "submitted", "finished",
                                      "item_count", "success_count", "failed_count"])
    times = [(_when(s), _when(f)) for s, f in zip(ops["submitted"], ops["finished"])]
    known = [t for pair in times for t in pair if t is not None]
    start, span = (min(known), max((max(known) - min(known)).total_seconds(), 1e-3)) if known else (None, 1.0)
    out = ["<h2>Operations</h2><table><tr><th>operation</th><th>chunk</th><th>attempt</th><th>status</th>"
           "<th>submitted</th><th>finished</th><th>items</th><th>paid</th><th>refused</th><th>timeline</th></tr>"]
    for r, (sub, fin) in zip(ops.itertuples(index=False), times):
        bar = ""
        if start is not None and sub is not None:
            left = 100 * (sub - start).total_seconds() / span
            width = 100 * ((fin or sub) - sub).total_seconds() / span
            bar = (f'<div class="track"><span class="bar" style="margin-left:{left:.1f}%;width:{width:.1f}%">'
                   "</span></div>")
        cells = [r.operation_id, r.chunk_no, r.attempt, r.status, r.submitted, r.finished, r.item_count,
                 r.success_count, r.failed_count]
        out.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + f"<td>{bar}</td></tr>")
    out.append("</table>")
    return "".join(out)


def _when(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)  # Toloka's times are UTC, often without an offset


def _e(value: Any) -> str:
    """Every cell goes through here: HTML-escaped text, empty for a missing value."""
    if value is None or (not isinstance(value, str | list | dict) and pd.isna(value)):
        return ""
    return html.escape(str(value), quote=True)
