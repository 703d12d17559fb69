"""Column mappings in configs, the sheet's other columns carried into the report, and near-duplicates end to end.

The corpus (tests/corpus/cases_columns.py) checks exit codes, messages and what the server paid; this checks what
it cannot: the settings a mapping gives, the carried columns' values in rows.parquet, the notes of near-duplicates,
and that neither a mapping nor a carried column changes a row's identity.
"""

from __future__ import annotations

import csv
import importlib.resources
from collections import Counter
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from payout_helpers import paid_multiset, server_bonuses
from sheet_factory import row, uid, write_csv

from pipeline.config import load_settings
from pipeline.contract import SheetLimits, SheetOptions
from pipeline.errors import SheetError, UsageError
from pipeline.ingest import read_sheets
from pipeline.keys import assign_row_keys
from pipeline.report import NEAR_DUPLICATE_NOTE, read_rows
from pipeline.validate import validate_rows

REPO = Path(__file__).resolve().parents[1]
RU = {"user_id": "ID исполнителя", "amount": "Сумма", "private_comment": "Комментарий",
      "public_title": "Заголовок", "public_message": "Сообщение"}


def write_sheet(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def ru_rows(n: int = 2) -> list[list[str]]:
    return [[uid(i), f"{i}.50", f"неделя {i}", '{"RU": "Спасибо"}', '{"RU": "Бонус"}'] for i in range(1, n + 1)]


def config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    return path


def only_run(reports: Path) -> Path:
    [run] = [p for p in reports.iterdir() if p.is_dir()]
    return run


# --- settings -----------------------------------------------------------------------------------------------


def test_the_packaged_ru_finance_mapping_is_known_to_every_env_and_ships_with_the_package():
    for env in ("local", "sandbox", "production"):
        assert "ru-finance" in load_settings(env).mappings
    packaged = importlib.resources.files("pipeline.configs").joinpath("mappings.toml").read_text(encoding="utf-8")
    assert packaged == (REPO / "configs" / "mappings.toml").read_text(encoding="utf-8")
    options = load_settings("local", mapping="ru-finance").sheet_options()
    assert options.mapping["id_исполнителя"] == "user_id" and options.mapping["сумма"] == "amount"
    assert load_settings("local").sheet_options().mapping == {}


def test_a_config_file_adds_mappings_replaces_one_by_name_and_may_choose_one(tmp_path: Path):
    cfg = config(tmp_path, 'mapping = "payroll"\n[mappings.payroll]\n" Worker  ID" = "User-ID"\n"Bonus" = "amount"\n'
                           '[mappings.ru-finance]\n"Исполнитель" = "user_id"\n')
    s = load_settings("local", cfg)
    assert s.mapping == "payroll" and s.mappings["payroll"] == {"worker_id": "user_id", "bonus": "amount"}
    assert s.mappings["ru-finance"] == {"исполнитель": "user_id"}  # replaced whole, not merged key by key
    assert load_settings("local", cfg, mapping="ru-finance").sheet_options().mapping == {"исполнитель": "user_id"}


@pytest.mark.parametrize(("text", "fragment"), [
    ('[mappings.p]\n"Bonus USD" = "bonus_amount"\n', "'Bonus USD' maps to 'bonus_amount', which is not a column payout"),
    ('[mappings.p]\n"Bonus" = 3\n', "'Bonus' must map to a column name"),
    ('[mappings.p]\n"Bonus" = "amount"\n" bonus " = "user_id"\n', "' bonus ' is mapped twice"),
    ('mappings = "ru"\n', "must be tables [mappings.NAME]"),
    ("[mappings.p]\n", "must be a table of"),
    ('mapping = "nope"\n', "unknown mapping 'nope' (known: ru-finance)"),
])
def test_bad_mappings_are_usage_errors_naming_what_is_wrong(tmp_path: Path, text: str, fragment: str):
    with pytest.raises(UsageError) as err:
        load_settings("local", config(tmp_path, text))
    assert fragment in str(err.value)


def test_a_mapping_may_name_a_per_language_column(tmp_path: Path):
    cfg = config(tmp_path, '[mappings.p]\n"Worker" = "user_id"\n"Sum" = "amount"\n"Title RU" = "public_title_ru"\n')
    sheet = write_sheet(tmp_path / "a.csv", ["Worker", "Sum", "Title RU", "public_message"],
                        [[uid(1), "1.00", "Спасибо", '{"EN": "Bonus"}']])
    frame = read_sheets([sheet], load_settings("local", cfg, mapping="p").sheet_options())
    assert frame["public_title"].tolist() == ['{"RU":"Спасибо"}']


# --- ingest -------------------------------------------------------------------------------------------------


def test_headers_and_mapping_keys_match_whatever_their_case_spacing_and_hyphens(tmp_path: Path):
    sheet = write_sheet(tmp_path / "a.csv", ["id-ИСПОЛНИТЕЛЯ", "  сумма", "Комментарий"], [[uid(1), "1.00", "x"]])
    options = SheetOptions(mapping=load_settings("local", mapping="ru-finance").sheet_options().mapping)
    frame = read_sheets([sheet], options)
    assert frame[["user_id", "amount", "private_comment"]].values.tolist() == [[uid(1), "1.00", "x"]]


@pytest.mark.parametrize(("chosen", "known", "hint"), [
    ({}, True, "the headers fit column mapping 'ru-finance': pass --mapping ru-finance"),
    ({"кто": "user_id"}, True, "the headers fit column mapping 'ru-finance': pass --mapping ru-finance"),
    ({"кто": "user_id"}, False, "the column mapping given maps none of these headers to user_id, amount"),
])
def test_missing_columns_name_the_mapping_that_fits(tmp_path: Path, chosen: dict[str, str], known: bool, hint: str):
    sheet = write_sheet(tmp_path / "a.csv", list(RU.values()), ru_rows())
    mappings = load_settings("local").mappings if known else {}
    with pytest.raises(SheetError) as err:
        read_sheets([sheet], SheetOptions(mapping=chosen, known_mappings=mappings))
    assert hint in str(err.value) and "ID исполнителя" in str(err.value)


def test_missing_columns_without_a_fitting_mapping_say_how_to_map(tmp_path: Path):
    sheet = write_sheet(tmp_path / "a.csv", ["Worker", "Bonus"], [[uid(1), "1.00"]])
    with pytest.raises(SheetError, match=r"pass --mapping NAME \(configured: ru-finance\), a \[mappings.NAME\]"):
        read_sheets([sheet], SheetOptions(known_mappings=load_settings("local").mappings))


def test_a_mapping_changes_no_row_identity(tmp_path: Path):
    english = write_sheet(tmp_path / "en.csv", list(RU), ru_rows(3))
    russian = write_sheet(tmp_path / "en2.csv", list(RU.values()), ru_rows(3))
    mapped = load_settings("local", mapping="ru-finance").sheet_options()

    def keys_of(path: Path, options: SheetOptions) -> list[str]:
        frame = read_sheets([path], options)
        frame["source_file"] = "same.csv"
        return assign_row_keys(validate_rows(frame)[0], "b")["row_key"].tolist()

    assert keys_of(english, SheetOptions()) == keys_of(russian, mapped)


def test_carried_columns_change_no_row_identity_and_an_empty_line_is_still_dropped(tmp_path: Path):
    plain = write_csv(tmp_path / "a.csv", [row(1), row(2)])
    extra = write_csv(tmp_path / "b.csv", [row(1, Dept="Sales"), row(2, Dept="")])
    with extra.open("a", encoding="utf-8") as fh:  # Excel's trailing ",,,," line
        fh.write("," * 7 + "\n")
    frames = [read_sheets([p]) for p in (plain, extra)]
    assert [c for c in frames[1].columns if c.startswith("sheet:")] == ["sheet:Dept"] and len(frames[1]) == 2
    for f in frames:
        f["source_file"] = "same.csv"
    keys = [assign_row_keys(validate_rows(f.drop(columns=[c for c in f.columns if c.startswith("sheet:")]))[0],
                            "b")["row_key"].tolist() for f in frames]
    assert keys[0] == keys[1]


def test_a_blank_headed_column_is_carried_under_its_letter_only_when_it_holds_a_value(tmp_path: Path):
    sheet = write_sheet(tmp_path / "a.csv", ["user_id", "amount", "", ""], [[uid(1), "1.00", "see mail", ""]])
    frame = read_sheets([sheet])
    assert frame["sheet:column C"].tolist() == ["see mail"]
    assert [c for c in frame.columns if c.startswith("sheet:")] == ["sheet:column C"]


# --- the report ---------------------------------------------------------------------------------------------


def test_carried_columns_reach_rows_parquet_as_text_and_the_summary_names_them(
        sandbox, payout, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    a = write_sheet(tmp_path / "a.csv", list(RU.values()) + ["Отдел", "note"],
                    [r + [dept, note] for r, dept, note in zip(ru_rows(3), ["Продажи", "", "Склад"],
                                                                ["=SUM(B2:B3)", "", "0012"])])
    b = write_csv(tmp_path / "b.csv", [row(7, Approved="Olga")])
    assert payout("run", str(a), str(b), "--api-url", sandbox.url, "--mapping", "ru-finance") == 0
    assert "Sheet: a.csv: columns payout does not read, carried into the report as sheet:<header>: Отдел, note" in (
        capsys.readouterr().out)
    table = pq.read_table(only_run(tmp_path / "reports") / "rows.parquet")
    carried = ["sheet:Отдел", "sheet:note", "sheet:Approved"]
    assert table.column_names[-3:] == carried and all(str(table.schema.field(c).type) == "string" for c in carried)
    got = table.select(["source_file", "source_row", "status", *carried]).to_pylist()
    assert [(r["source_row"], r["status"], r["sheet:Отдел"], r["sheet:note"], r["sheet:Approved"]) for r in got] == [
        (2, "paid", "Продажи", "=SUM(B2:B3)", None), (3, "paid", None, None, None),
        (4, "paid", "Склад", "0012", None), (2, "paid", None, None, "Olga")]
    assert len(read_rows(only_run(tmp_path / "reports"))) == 4  # the report's own reader is unchanged


def test_a_sheet_without_other_columns_keeps_the_report_schema(tmp_path: Path, payout):
    sheet = write_csv(tmp_path / "a.csv", [row(1)])
    assert payout("run", str(sheet), "--dry-run", "--data-dir", str(tmp_path / "data")) == 0
    table = pq.read_table(only_run(tmp_path / "reports") / "rows.parquet")
    assert not [c for c in table.column_names if c.startswith("sheet:")]


# --- near-duplicates end to end -----------------------------------------------------------------------------


def test_the_issue_five_bonuses_pay_once_and_each_repeat_names_the_row_it_repeats(sandbox, payout, tmp_path: Path):
    title, nbsp = '{"EN": "Thanks"}', "\u00a0"
    sheet = write_csv(tmp_path / "p.csv", [
        row(1, amount="2.00", private_comment="Bonus week 48", public_title=title),
        row(1, amount="2.00", private_comment="bonus week 48", public_title=title),
        row(1, amount="2.00", private_comment=f"Bonus{nbsp}week 48", public_title=title),
        row(1, amount="2.00", private_comment="Bonus week 48", public_title='{"EN": "Thanks "}'),
        row(1, amount="2.00", private_comment="Bonus week 48", public_title=title),  # an exact copy
        row(1, amount="2.00", private_comment="BONUS week 48", public_title=title, assignment_id="other"),
    ])
    assert payout("run", str(sheet), "--api-url", sandbox.url) == 1
    assert paid_multiset(server_bonuses(sandbox.url)) == Counter({(uid(1), "2.00"): 1})
    rows = read_rows(only_run(tmp_path / "reports")).set_index("source_row")
    assert rows["status"].to_dict() == {2: "paid", 3: "duplicate", 4: "duplicate", 5: "duplicate", 6: "duplicate",
                                        7: "duplicate"}
    near = "duplicate of " + str(sheet) + ":2" + NEAR_DUPLICATE_NOTE
    assert rows.loc[[3, 4, 5, 7], "note"].tolist() == [near] * 4
    assert rows.loc[6, "note"] == f"duplicate of {sheet}:2"  # exact: no word about normalising
    assert rows["row_key"].nunique() == 6  # row identity is untouched: every row keeps a key of its own


def test_reject_all_refuses_every_row_of_a_near_group(sandbox, payout, tmp_path: Path):
    sheet = write_csv(tmp_path / "p.csv", [row(1, private_comment="A b"), row(2), row(1, private_comment="a  B ")])
    assert payout("run", str(sheet), "--api-url", sandbox.url, "--dedupe-policy", "reject-all") == 1
    assert paid_multiset(server_bonuses(sandbox.url)) == Counter({(uid(2), "1.50"): 1})
    rows = read_rows(only_run(tmp_path / "reports")).set_index("source_row")
    assert rows.loc[[2, 4], "status"].tolist() == ["duplicate"] * 2
    assert rows.loc[2, "note"] == f"duplicate of {sheet}:4{NEAR_DUPLICATE_NOTE}"
    assert rows.loc[4, "note"] == f"duplicate of {sheet}:2{NEAR_DUPLICATE_NOTE}"


def test_a_row_with_only_a_carried_cell_is_reported_never_dropped(tmp_path: Path):
    sheet = write_csv(tmp_path / "a.csv", [row(1, Notes=""), {"Notes": "approved by Olga"}])
    frame = read_sheets([sheet])
    assert frame["source_row"].tolist() == [2, 3]
    checked, errors = validate_rows(frame.drop(columns=["sheet:Notes"]))
    assert set(errors.loc[errors["source_row"] == 3, "column"]) >= {"user_id", "amount"}
    assert pd.isna(frame["sheet:Notes"].tolist()[0])


def test_an_xlsx_blank_headed_column_is_carried_under_its_letter_only_when_it_holds_a_value(tmp_path: Path):
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.append(["user_id", "amount", None, "Dept", None])
    ws.append([uid(1), 1.5, "see mail", "Sales", None])
    ws.append([uid(2), 2, None, None, None])
    wb.save(tmp_path / "a.xlsx")
    frame = read_sheets([tmp_path / "a.xlsx"])
    assert [c for c in frame.columns if c.startswith("sheet:")] == ["sheet:column C", "sheet:Dept"]
    assert frame["sheet:column C"].tolist()[0] == "see mail" and frame["sheet:Dept"].tolist()[0] == "Sales"


def test_a_nested_parquet_column_is_left_out_with_a_notice_never_refusing_the_sheet(tmp_path: Path):
    import pyarrow as pa

    pq.write_table(pa.table({"user_id": [uid(1)], "amount": ["1.00"], "meta": [{"a": 1}], "Dept": ["Sales"]}),
                   tmp_path / "a.parquet")
    notices: list[str] = []
    frame = read_sheets([tmp_path / "a.parquet"], notices=notices)
    assert [c for c in frame.columns if c.startswith("sheet:")] == ["sheet:Dept"]
    assert "a.parquet: column 'meta' (struct<a: int64>) left out: its values have no text form" in notices


def test_a_mapping_built_in_code_matches_like_a_configured_one(tmp_path: Path):
    sheet = write_sheet(tmp_path / "a.csv", ["WORKER id", "Bonus"], [[uid(1), "1.00"]])
    frame = read_sheets([sheet], SheetOptions(mapping={"Worker ID": "User ID", " bonus": "amount"}))
    assert frame[["user_id", "amount"]].values.tolist() == [[uid(1), "1.00"]]


def test_a_carried_cell_longer_than_max_cell_chars_is_cut_and_said(tmp_path: Path):
    sheet = write_sheet(tmp_path / "a.csv", ["user_id", "amount", "Notes"],
                        [[uid(1), "1.00", "x" * 50], [uid(2), "2.00", "short"]])
    notices: list[str] = []
    frame = read_sheets([sheet], SheetOptions(limits=SheetLimits(max_cell_chars=10)), notices)
    assert frame["sheet:Notes"].tolist() == ["x" * 10, "short"]
    assert "a.csv: 1 cell(s) of column 'Notes' longer than 10 characters were cut to that length in the report " \
           "(--max-cell-chars)" in notices
