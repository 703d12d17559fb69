"""Issue 10: report.html beside the Parquet files (offline, every cell escaped), seen in headless Chromium, and the
plan a dry run prints for sign-off.

Chromium (Debian's `chromium` package; .ci/run installs it) is required: without it the browser test fails,
unless PAYOUT_SKIP_BROWSER=1 says so explicitly (then it is reported as skipped, never silently passed).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest
from sandbox_fixtures import TOKEN
from sheet_factory import row, write_csv

from pipeline.cli import main

HOSTILE = '"><img src=//evil.example/x.png onerror=alert(1)><script>alert(2)</script>'
ALLOWED_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "table", "tr", "td", "th", "p", "b",
                "br", "div", "span"}


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attrs: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attrs |= {name for name, _ in attrs}

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def a_run(sandbox_url: str, tmp_path: Path, *extra: str) -> Path:
    """A real run (sandbox over HTTP) with paid, invalid (a hostile cell) and duplicate rows; its report folder."""
    rows = [row(i) for i in range(6)] + [row(40, user_id=HOSTILE), row(41, amount="-5"), dict(row(2))]
    sheet = write_csv(tmp_path / "p.csv", rows)
    out = tmp_path / "r"
    assert main(["run", str(sheet), "--api-url", sandbox_url, "--batch-id", "h", "--out", str(out),
                 "--ledger", str(tmp_path / "l.sqlite"), *extra]) == 1
    return sorted(p for p in out.iterdir() if p.is_dir())[-1]


def test_report_html_is_offline_and_escapes_every_cell(sandbox, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TOLOKA_TOKEN", TOKEN)
    run_dir = a_run(sandbox.url, tmp_path)
    page = (run_dir / "report.html").read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["reports"]["html"] == str(run_dir / "report.html")
    parsed = Tags()
    parsed.feed(page)
    assert parsed.tags <= ALLOWED_TAGS, parsed.tags - ALLOWED_TAGS  # no img, script, link, iframe...
    assert not parsed.attrs & {"src", "href", "onerror", "action"}
    assert HOSTILE in "".join(parsed.text)  # shown as text, exactly
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert TOKEN not in page
    for text in ("Problem rows (3)", "Operations", "Paid", "Invalid", "Duplicate"):
        assert text in page


def test_a_dry_run_prints_the_plan_to_sign_off(tmp_path, capsys, hermetic_data_dir) -> None:
    rows = [row(i, amount=f"{i + 1}.25") for i in range(8)] + [row(70, amount="abc"), dict(row(0, amount="1.25"))]
    rows = [{**r, "Dept": "Sales"} for r in rows] + [{"user_id": "Total", "amount": "39.25"}]
    sheet = write_csv(tmp_path / "p.csv", rows)
    assert main(["run", str(sheet), "--dry-run"]) == 1
    out = capsys.readouterr().out
    assert "To pay:" in out and "8 rows" in out and "8 distinct users" in out and "total $38.00" in out
    assert "Largest bonuses" in out and out.index("$8.25") < out.index("$7.25")  # largest first
    assert "Invalid (not paid): 1 row," in out and "p.csv row 10: amount:" in out
    assert "Duplicates (not paid): 1 row," in out and "p.csv row 11: duplicate of" in out
    assert "Control totals of the sheet (checked, not paid): 1 row, $39.25" in out and "p.csv row 12: control total" in out
    assert "Sheet: p.csv: columns payout does not read, carried into the report as sheet:<header>: Dept" in out
    [plan] = list((hermetic_data_dir / "reports").glob("*/plan.txt"))
    assert "Full list:" in out and str(plan.parent / "rows.parquet") in out
    assert plan.read_text().strip() in out


def png_distinct_bytes(png: bytes) -> int:
    """Distinct byte values of a PNG's decompressed image data: a blank page has a handful, text has many."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    at, data = 8, b""
    while at < len(png):
        length, kind = struct.unpack(">I4s", png[at:at + 8])
        if kind == b"IDAT":
            data += png[at + 8:at + 8 + length]
        at += 12 + length
    return len(set(zlib.decompress(data)))


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("PAYOUT_SKIP_BROWSER") == "1":
        pytest.skip("PAYOUT_SKIP_BROWSER=1: report.html was not rendered in a browser")
    pytest.fail("chromium is not installed (apt-get install -y chromium), or set PAYOUT_SKIP_BROWSER=1 to skip")


def screenshot(browser: str, page: Path, png: Path, profile: Path) -> tuple[bytes, str]:
    """(screenshot PNG, the DOM as rendered) of `page` in headless Chromium, offline."""
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
              f"--user-data-dir={profile}", "--window-size=1000,900"]
    subprocess.run([*common, f"--screenshot={png}", page.as_uri()], check=True, capture_output=True, timeout=120)
    dom = subprocess.run([*common, "--dump-dom", page.as_uri()], check=True, capture_output=True, text=True,
                         timeout=120).stdout
    return png.read_bytes(), dom


def test_report_html_renders_in_headless_chromium(sandbox, tmp_path, monkeypatch) -> None:
    browser = chromium()
    monkeypatch.setenv("TOLOKA_TOKEN", TOKEN)
    run_dir = a_run(sandbox.url, tmp_path)
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>")
    blank_png, _ = screenshot(browser, blank, tmp_path / "blank.png", tmp_path / "profile")
    shot, dom = screenshot(browser, run_dir / "report.html", tmp_path / "report.png", tmp_path / "profile")
    assert png_distinct_bytes(blank_png) < 16  # the measure sees a blank page as blank...
    assert png_distinct_bytes(shot) > 64  # ...and the report as text, tables and colours
    assert "Problem rows (3)" in dom and "<script>alert(2)</script>" not in dom and "&lt;script&gt;" in dom
    assert TOKEN not in dom and TOKEN not in shot.decode("latin-1")


def test_plan_and_page_render_rows_without_amounts(tmp_path) -> None:
    """Rows whose amount could not be read (NA) must not break the page or the plan."""
    import pandas as pd

    from pipeline import html_report, signoff
    from pipeline.report import summarize

    rows = pd.DataFrame({
        "run_id": "r", "source_file": "p.csv", "source_row": [2, 3], "row_key": ["a", "b"], "user_id": ["u", "v"],
        "amount_cents": pd.array([150, None], dtype="Int64"), "status": ["planned", "planned"],
        "errors": [[], [{"column": "amount", "code": "x", "message": "<b>bad</b>"}]], "operation_id": None,
        "bonus_id": None, "note": None})
    summary = summarize(rows, {"run_id": "r", "batch_id": "b", "dry_run": True})
    assert "total $1.50" in signoff.render(summary, rows, tmp_path)
    assert "Problem rows</h2><p>None.</p>" in html_report.render(summary, rows, pd.DataFrame())
