"""The corpus of finance sheets (tests/corpus): each one paid through `payout run` against the sandbox over HTTP,
and its outcome checked: the exit code and message, the per-row errors with spreadsheet row and column, every row
in rows.parquet exactly once, and the server's own listing holding exactly the bonuses expected, nothing more."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest
from payout_helpers import paid_on_server
from sandbox_fixtures import TOKEN

from pipeline.cli import main
from pipeline.report import read_rows

sys.path.insert(0, str(Path(__file__).resolve().parent / "corpus"))

from case import Case  # noqa: E402
from corpus_cases import all_cases  # noqa: E402

CASES = all_cases()


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 60, f"the corpus has {len(CASES)} sheets; issue 9 asks for at least 60"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_corpus_sheet(case: Case, sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOLOKA_TOKEN", TOKEN)
    folder = tmp_path / "sheets"
    folder.mkdir()
    sheet = case.materialise(folder)
    out = tmp_path / "reports"
    code = main(["run", str(sheet), "--api-url", sandbox.url, "--batch-id", "corpus", "--ledger",
                 str(tmp_path / "ledger.sqlite"), "--out", str(out), *case.config_args(folder), *case.args])
    said = "\n".join(capsys.readouterr())
    assert "Traceback" not in said
    assert code == case.exit, f"exit {code}, expected {case.exit}:\n{said}"
    for text in case.says:
        assert text in said, f"{text!r} not in the output:\n{said}"
    paid = paid_on_server(sandbox.url)
    assert paid == Counter(dict(Counter(case.paid))), f"the server paid {dict(paid)}"
    if code == 2:
        assert not list(out.glob("*/rows.parquet")), "a refused sheet leaves no report"
        return
    [report] = list(out.glob("*/rows.parquet"))
    rows = read_rows(report.parent)
    assert not rows.duplicated(["source_file", "source_row"]).any(), "a sheet row is reported twice"
    if case.rows is not None:
        assert len(rows) == case.rows
    by_row = rows.set_index("source_row")
    for row, status in case.statuses.items():
        assert by_row.loc[row, "status"] == status, f"row {row}: {by_row.loc[row].to_dict()}"
    for row, column, text in case.errors:
        assert row in by_row.index, f"row {row} is not in the report: rows {sorted(by_row.index)}"
        found = [e for e in by_row.loc[row, "errors"] if e["column"] == column
                 and (text in e["code"] or text in e["message"])]
        assert found, f"row {row}: no {column} error with {text!r} in {list(by_row.loc[row, 'errors'])}"
