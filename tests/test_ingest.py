from __future__ import annotations

import json
from decimal import Decimal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sheet_factory import row, uid, write_csv
from structlog.testing import capture_logs

from pipeline.errors import SheetError
from pipeline.ingest import FRAME_COLUMNS, normalise_header, read_sheets


def test_csv_becomes_the_canonical_frame_with_sheet_line_numbers(tmp_path):
    p = write_csv(tmp_path / "a.csv", [row(1), row(2, amount=" 2 ")])
    frame = read_sheets([p])
    assert list(frame.columns) == list(FRAME_COLUMNS)
    assert frame["source_row"].tolist() == [2, 3]
    assert frame["source_row"].dtype == "int64"
    assert frame["source_file"].tolist() == [str(p)] * 2
    assert frame["amount"].tolist() == ["1.50", "2"]
    assert frame["bonus_key"].tolist() == [None, None]
    for c in FRAME_COLUMNS:
        if c != "source_row":
            assert frame[c].dtype == object


def test_text_is_never_mangled(tmp_path):
    p = write_csv(tmp_path / "a.csv", [row(1, user_id="NA", amount="001", private_comment="null")])
    r = read_sheets([p]).iloc[0]
    assert (r["user_id"], r["amount"], r["private_comment"]) == ("NA", "001", "null")


def test_empty_cells_become_none(tmp_path):
    p = write_csv(tmp_path / "a.csv", [row(1, private_comment="   ", assignment_id="")])
    r = read_sheets([p]).iloc[0]
    assert r["private_comment"] is None and r["assignment_id"] is None


@pytest.mark.parametrize("header", ["User ID", " user_id ", "USER_ID", "user-id", "User  Id"])
def test_headers_match_whatever_their_case_and_spacing(tmp_path, header):
    p = tmp_path / "a.csv"
    p.write_text(f"{header},Amount\n{uid(1)},1\n")
    assert read_sheets([p])["user_id"].tolist() == [uid(1)]


def test_normalise_header():
    assert normalise_header("Public Title EN") == "public_title_en"
    assert normalise_header(" public-message - ru ") == "public_message_ru"


def test_per_language_columns_become_json_objects(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text(
        "user_id,amount,Public Title EN,public_title_ru,public_message_en\n"
        f"{uid(1)},1,Hi,Привет,Thanks\n"
        f"{uid(2)},1,,,\n",
        encoding="utf-8",
    )
    frame = read_sheets([p])
    assert json.loads(frame["public_title"][0]) == {"EN": "Hi", "RU": "Привет"}
    assert json.loads(frame["public_message"][0]) == {"EN": "Thanks"}
    assert frame["public_title"][1] is None


def test_json_column_and_language_columns_together_are_refused(tmp_path):
    p = tmp_path / "both.csv"
    p.write_text(f"user_id,amount,public_title,public_title_en\n{uid(1)},1,,x\n")
    with pytest.raises(SheetError, match="both.csv"):
        read_sheets([p])


def test_bom_prefixed_csv(tmp_path):
    p = tmp_path / "bom.csv"
    p.write_bytes(("\ufeffuser_id,amount\n" + f"{uid(1)},1.5\n").encode("utf-8"))
    assert read_sheets([p])["user_id"].tolist() == [uid(1)]


def test_multiline_cell_counts_as_one_record(tmp_path):
    p = write_csv(tmp_path / "a.csv", [row(1, private_comment="line one\nline two"), row(2)])
    frame = read_sheets([p])
    assert frame["private_comment"][0] == "line one\nline two"
    assert frame["source_row"].tolist() == [2, 3]


def test_all_empty_rows_are_dropped_without_renumbering(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text(f"user_id,amount\n,\n{uid(1)},1\n,\n")
    frame = read_sheets([p])
    assert frame["source_row"].tolist() == [3]


def test_unknown_columns_are_carried_as_text_with_a_warning_and_a_notice(tmp_path):
    p = write_csv(tmp_path / "a.csv", [row(1, Notes="ask Bob"), row(2, Notes="")])
    notices: list[str] = []
    with capture_logs() as logs:
        frame = read_sheets([p], notices=notices)
    assert "notes" not in frame.columns
    assert frame["sheet:Notes"].tolist()[0] == "ask Bob" and pd.isna(frame["sheet:Notes"].tolist()[1])
    assert any(e["event"] == "sheet_unknown_columns" and e["columns"] == ["Notes"] for e in logs)
    assert notices == ["a.csv: columns payout does not read, carried into the report as sheet:<header>: Notes"]


def test_parquet_numbers_become_exact_text(tmp_path):
    p = tmp_path / "a.parquet"
    table = pa.table(
        {
            "User ID": [uid(1), uid(2), uid(3)],
            "amount": pa.array([Decimal("1.50"), Decimal("0.10"), None], pa.decimal128(10, 2)),
            "float_amount": [0.1, 2.0, None],
            "without_message": [True, False, None],
        }
    )
    pq.write_table(table, p)
    frame = read_sheets([p])
    assert frame["amount"].tolist() == ["1.50", "0.10", None]
    assert frame["without_message"].tolist() == ["true", "false", None]
    assert frame["source_row"].tolist() == [2, 3, 4]

    pq.write_table(pa.table({"user_id": [uid(1)], "amount": [0.1]}), p)
    assert read_sheets([p])["amount"].tolist() == ["0.1"]


def test_excel_sheet_named_with_sheet_option(tmp_path):
    from pipeline.contract import SheetOptions

    p = tmp_path / "a.xlsx"
    with pd.ExcelWriter(p, engine="openpyxl") as xw:
        pd.DataFrame({"User ID": [uid(1), "001"], "Amount": [1.5, 2], "Public Title EN": ["Hi", None]}).to_excel(
            xw, index=False, sheet_name="payouts"
        )
        pd.DataFrame({"x": [1]}).to_excel(xw, index=False, sheet_name="other")
    with pytest.raises(SheetError, match="2 sheets hold data .* --sheet NAME"):  # by design (issue 9)
        read_sheets([p])
    frame = read_sheets([p], SheetOptions(sheet="payouts"))
    assert frame["user_id"].tolist() == [uid(1), "001"]
    assert frame["amount"].tolist() == ["1.50", "2"]  # a number within 1e-9 of a cent: 2 decimals (issue 9)
    assert frame["public_title"].tolist() == ['{"EN":"Hi"}', None]
    assert frame["source_row"].tolist() == [2, 3]


def test_several_sheets_keep_their_own_names_and_rows(tmp_path):
    a = write_csv(tmp_path / "a.csv", [row(1)])
    b = write_csv(tmp_path / "b.csv", [row(2), row(3)])
    frame = read_sheets([a, b])
    assert list(zip(frame["source_file"], frame["source_row"])) == [(str(a), 2), (str(b), 2), (str(b), 3)]


@pytest.mark.parametrize(
    "name, content, why",
    [
        ("missing.csv", None, "not found"),
        ("empty.csv", b"", "empty"),
        ("sheet.json", b"{}", "unknown sheet format"),
        ("noamount.csv", b"user_id,comment\nabc,x\n", "amount"),
        ("ragged.csv", b"user_id,amount\na,1,2,3\n", "cannot read"),
        ("unclear.csv", "user_id,amount\nx,1 №\n".encode("cp1251"), "--encoding"),  # № or ¹: cp1251 or cp1252
        ("broken.parquet", b"PAR1 not really", "cannot read"),
        ("broken.xlsx", b"not a zip", "cannot read"),
        ("dupe.csv", b"user_id,User ID,amount\na,b,1\n", "same thing"),
    ],
)
def test_unreadable_sheets_raise_sheet_error_naming_the_file(tmp_path, name, content, why):
    p = tmp_path / name
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(SheetError) as info:
        read_sheets([p])
    msg = str(info.value)
    assert name in msg and why in msg
    assert "\n" not in msg


SAMPLES = __import__("pathlib").Path(__file__).resolve().parents[1] / "data" / "samples"


@pytest.mark.parametrize("name, rows, invalid, duplicates", [
    ("payouts.csv", 20, 7, 2), ("payouts.parquet", 12, 3, 1), ("payouts.xlsx", 5, 1, 1)])
def test_sample_sheets_read_and_show_their_documented_problems(name, rows, invalid, duplicates):
    from pipeline.dedupe import find_duplicates
    from pipeline.keys import assign_row_keys
    from pipeline.validate import ValidationRules, validate_rows

    frame = read_sheets([SAMPLES / name])
    checked, _ = validate_rows(frame, ValidationRules())
    keyed = assign_row_keys(checked, "samples")
    _, dups = find_duplicates(keyed[keyed["is_valid"]])
    assert (len(frame), int((~checked["is_valid"]).sum()), len(dups)) == (rows, invalid, duplicates)


def test_factorize_text_matches_pandas_whether_or_not_strings_are_shared():
    import numpy as np

    from pipeline.contract import factorize_text

    shared = ["a", "b", None, "a", "c", "b", None]
    copies = ["".join(ch) if ch else None for ch in shared]  # equal values, distinct objects
    for values in (np.array(shared, dtype=object), np.array(copies, dtype=object),
                   np.array([f"id{i}" for i in range(30_000)] + [None], dtype=object), np.array([], dtype=object)):
        codes, uniques = factorize_text(values)
        expected_codes, expected_uniques = pd.factorize(values)
        assert codes.tolist() == expected_codes.tolist()
        assert list(uniques) == list(expected_uniques)
