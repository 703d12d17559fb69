"""Write the sample sheets in this folder (deterministic; re-run to regenerate them):

- payouts.csv     20 rows, JSON title/message cells: valid rows, 7 invalid ones, 2 duplicates (409 rule)
- payouts.parquet 12 rows, per-language columns (public_title_en, public_message_ru, ...), decimal amounts
- payouts.xlsx    5 rows, per-language columns, as finance exports them from Excel

    python data/samples/make_samples.py

The CSV and Parquet files come out byte-identical; the XLSX has the same content but its zip
timestamps change on every run.
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent


def uid(name: str) -> str:
    """A stable, well-formed Toloka-style user id (32 lowercase hex) for a sample worker."""
    return hashlib.md5(name.encode()).hexdigest()


def j(**texts: str) -> str:
    return json.dumps(texts, ensure_ascii=False)


def csv_rows() -> list[dict[str, str]]:
    thanks, great = j(EN="Thank you!", RU="Спасибо!"), j(EN="Great work")
    msg = j(EN="Extra reward for careful labelling", RU="Доплата за аккуратную разметку")
    rows = [
        # valid
        (uid("alice"), "1.50", "00001a2b3c--63bfc4c358d7a46c32a7b233", "week 45 quality bonus", great, msg, "false"),
        (uid("bob"), "0.75", "", "week 45 quality bonus", great, msg, "false"),
        (uid("carol"), "$2", "", "week 45 top 10", thanks, msg, "false"),
        (uid("dave"), "10", "", "", "", "", "true"),
        (uid("erin"), "0.01", "", "minimum bonus", great, msg, "no"),
        (uid("frank"), "100", "", "maximum bonus", great, msg, "FALSE"),
        (uid("grace"), "3.10", "", "", j(RU="Отлично", EN="Excellent"), msg, ""),
        (uid("heidi"), "4.5", "", "week 45", great, msg, "0"),
        (uid("ivan"), "1.500", "", "three decimals but exact cents", great, msg, "false"),
        (uid("judy"), "5", "", "paid silently", "", "", "yes"),
        (uid("alice"), "1.50", "00001a2b3c--aaaaaaaaaaaaaaaaaaaaaaaa", "week 46 quality bonus", great, msg, "false"),
        # invalid
        ("A1B0B42923C429DAA2C764D7CCFC364D", "1", "", "bad user id (upper case)", great, msg, "false"),
        (uid("kim"), "1.234", "", "3 decimals", great, msg, "false"),
        (uid("leo"), "0", "", "zero amount", great, msg, "false"),
        (uid("mia"), "150", "", "above $100", great, msg, "false"),
        (uid("ned"), "", "", "amount missing", great, msg, "false"),
        (uid("olga"), "2", "", "without_message but has a title", great, "", "true"),
        (uid("pete"), "2", "", "title is not JSON", '{"EN": "oops', msg, "false"),
        # duplicates of rows above by Toloka's 409 rule (same user, amount, title, message, comment)
        (uid("bob"), "0.750", "", "week 45 quality bonus", great, msg, "false"),
        (uid("carol"), "2.00", "", "week 45 top 10", j(RU="Спасибо!", EN="Thank you!"), msg, "false"),
    ]
    cols = ["user_id", "amount", "assignment_id", "private_comment", "public_title", "public_message", "without_message"]
    return [dict(zip(cols, r)) for r in rows]


def parquet_table() -> pa.Table:
    names = ["quinn", "rosa", "sam", "tara", "uma", "vic", "walt", "xena", "yuri", "zoe", "quinn", "bad"]
    amounts = ["0.50", "1.25", "2.00", "0.05", "12.34", "99.99", "7.00", "0.10", "150.00", "3.00", "0.50", "1.00"]
    user_ids = [uid(n) for n in names]
    user_ids[-1] = "not-a-toloka-id"
    title_en = ["Bonus"] * 12
    title_ru = ["Бонус", None, "Бонус", None, None, "Бонус", None, None, None, None, "Бонус", None]
    message_en = ["Thanks for the extra tasks"] * 12
    message_en[6] = None  # title without a message: invalid unless without_message
    return pa.table(
        {
            "User ID": user_ids,
            "Amount": pa.array([Decimal(a) for a in amounts], pa.decimal128(10, 2)),
            "Private Comment": ["november"] * 12,
            "Public Title EN": title_en,
            "Public Title RU": title_ru,
            "Public Message EN": message_en,
            "Without Message": [False] * 12,
        }
    )


def xlsx_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "User ID": [uid("anna"), uid("boris"), uid("chen"), uid("dora"), uid("anna")],
            "Amount": [1.5, 2, 0.25, 0.001, 1.5],
            "Public Title EN": ["Well done", "Well done", None, "Well done", "Well done"],
            "Public Message EN": ["Thank you", "Thank you", None, "Thank you", "Thank you"],
            "Without Message": [None, None, "true", None, None],
            "Private Comment": ["q4", "q4", "silent", "too small", "q4"],
        }
    )


def main(out: Path = HERE) -> None:
    pd.DataFrame(csv_rows()).to_csv(out / "payouts.csv", index=False)
    pq.write_table(parquet_table(), out / "payouts.parquet")
    xlsx_frame().to_excel(out / "payouts.xlsx", index=False, sheet_name="payouts", engine="openpyxl")
    print(f"wrote payouts.csv, payouts.parquet, payouts.xlsx to {out}")


if __name__ == "__main__":
    main()
