"""Generate a payout sheet of N rows (CSV and Parquet) shaped like finance's, for the benchmarks.

Default shape `finance` (issue 11: "sheets of that shape"):
- ~1 % invalid amounts (3 decimals, 0, over $100, negative, "1,50", "n/a", empty),
- ~1 % exact duplicate rows (a whole earlier row copied, assignment and comment included),
- a unique `private_comment` per row (project, week, ticket and row reference),
- JSON `public_title` / `public_message` in several languages ({"EN": ..., "RU": ...}, EN+TR, EN+ES+PT, ...),
  a few hundred distinct titles and a few thousand distinct messages (project x week templates),
- varied amounts (log-normal around $1.50, $0.01-$100, written "12.30", "12.3", "12" or "$12.30") and users
  (rows/8 distinct user ids, skewed 1/rank^0.6: some users get many bonuses),
- a unique Toloka-style `assignment_id` per row, `without_message` false (2 % true with no texts).

Shape `tidy` is the earlier generator: repeated comments and titles, ~1 % invalid rows of every kind, ~1 %
409 duplicates (same bonus, another assignment). `--invalid 0 --duplicates 0` gives an all-valid, all-unique
sheet (P2's 100k bonuses). Deterministic per seed.

    python tests/perf/make_sheet.py --rows 1000000 --out /tmp/perf
    python tests/perf/make_sheet.py --rows 100000 --invalid 0 --duplicates 0 --name valid_100000 --out /tmp/perf
    python tests/perf/make_sheet.py --rows 1000000 --out /tmp/perf --time   # also time the stages in-process
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

COLUMNS = ["user_id", "amount", "assignment_id", "private_comment", "public_title", "public_message",
           "without_message"]

# --- finance shape ---------------------------------------------------------------------------------

LANG_SETS = [("EN",), ("EN", "RU"), ("EN", "RU"), ("EN", "RU", "TR"), ("EN", "ES", "PT"), ("EN", "RU", "KK"),
             ("EN", "FR", "DE"), ("EN", "ID")]
TITLE_WORDS = {
    "EN": ["Bonus for project {p}", "Thank you, project {p}", "Quality bonus ({p})", "Extra reward: {p}"],
    "RU": ["Бонус за проект {p}", "Спасибо за проект {p}", "Премия за качество ({p})", "Доплата: {p}"],
    "TR": ["{p} projesi için bonus", "Teşekkürler, proje {p}", "Kalite bonusu ({p})", "Ek ödül: {p}"],
    "ES": ["Bono del proyecto {p}", "Gracias, proyecto {p}", "Bono de calidad ({p})", "Premio extra: {p}"],
    "PT": ["Bônus do projeto {p}", "Obrigado, projeto {p}", "Bônus de qualidade ({p})", "Prêmio extra: {p}"],
    "KK": ["{p} жобасы үшін бонус", "Рақмет, жоба {p}", "Сапа үшін бонус ({p})", "Қосымша сыйақы: {p}"],
    "FR": ["Prime du projet {p}", "Merci, projet {p}", "Prime de qualité ({p})", "Récompense : {p}"],
    "DE": ["Bonus für Projekt {p}", "Danke, Projekt {p}", "Qualitätsbonus ({p})", "Extra-Prämie: {p}"],
    "ID": ["Bonus proyek {p}", "Terima kasih, proyek {p}", "Bonus kualitas ({p})", "Hadiah ekstra: {p}"],
}
MESSAGE_WORDS = {  # one short sentence, as bonus messages usually are
    "EN": "Thanks for your careful work on {p} in week {w}!",
    "RU": "Спасибо за аккуратную работу над {p} на неделе {w}!",
    "TR": "{w}. haftada {p} için özenli çalışmanıza teşekkürler!",
    "ES": "¡Gracias por su trabajo en {p} en la semana {w}!",
    "PT": "Obrigado pelo trabalho em {p} na semana {w}!",
    "KK": "{w}-аптадағы {p} жұмысыңыз үшін рақмет!",
    "FR": "Merci pour votre travail sur {p} en semaine {w} !",
    "DE": "Danke für Ihre Arbeit an {p} in Woche {w}!",
    "ID": "Terima kasih atas kerja Anda di {p} minggu {w}!",
}
BAD_AMOUNTS = ["1.234", "0", "0.00", "150", "250.00", "-5", "1,50", "n/a", "", "12.5.1", "0.001"]


def make_finance(rows: int, seed: int = 7, invalid: float = 0.01, duplicates: float = 0.01
                 ) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n_users = max(rows // 8, 50)
    hi, lo = rng.integers(0, 2**63, n_users, dtype=np.int64), rng.integers(0, 2**63, n_users, dtype=np.int64)
    users = np.array([f"{a:016x}{b:016x}" for a, b in zip(hi, lo)], dtype=object)
    # skewed: a user's weight ~ 1/rank^0.6 (a few regulars, a long tail)
    weights = 1.0 / np.arange(1, n_users + 1) ** 0.6
    user = users[rng.choice(n_users, rows, p=weights / weights.sum())]

    # amounts: log-normal around $1.50 (cents 1..10000), a few notations
    cents = rng.lognormal(np.log(150), 1.2, rows).round().astype(np.int64).clip(1, 10_000)
    style = rng.random(rows)
    amount = np.empty(rows, dtype=object)
    for i, (c, s) in enumerate(zip(cents.tolist(), style.tolist())):
        text = f"{c // 100}.{c % 100:02d}"
        if s < 0.15 and c % 10 == 0:
            text = text.rstrip("0").rstrip(".") if c % 100 == 0 else text[:-1]  # "12.3", "12"
        elif s > 0.95:
            text = "$" + text
        amount[i] = text

    n_projects = 240
    project = rng.integers(0, n_projects, rows)
    week = rng.integers(1, 53, rows)
    project_names = np.array([f"P-{1000 + 37 * k}" for k in range(n_projects)], dtype=object)
    lang_of_project = rng.integers(0, len(LANG_SETS), n_projects)
    title_variant = rng.integers(0, 4, rows)
    # titles: project x variant; messages: project x week (the JSON text is built once per distinct value)
    title_cache: dict[tuple[int, int], str] = {}
    message_cache: dict[tuple[int, int], str] = {}
    title = np.empty(rows, dtype=object)
    message = np.empty(rows, dtype=object)
    for i, (p, w, v) in enumerate(zip(project.tolist(), week.tolist(), title_variant.tolist())):
        langs = LANG_SETS[lang_of_project[p]]
        t = title_cache.get((p, v))
        if t is None:
            t = title_cache[(p, v)] = json.dumps({lang: TITLE_WORDS[lang][v].format(p=project_names[p])
                                                  for lang in langs}, ensure_ascii=False)
        m = message_cache.get((p, w))
        if m is None:
            m = message_cache[(p, w)] = json.dumps({lang: MESSAGE_WORDS[lang].format(p=project_names[p], w=w)
                                                    for lang in langs}, ensure_ascii=False)
        title[i], message[i] = t, m

    ids = rng.integers(0, 2**48, (rows, 3))
    assignment = np.array([f"{a % 2**40:010x}--{b:012x}{c:012x}" for a, b, c in ids.tolist()], dtype=object)
    ticket = rng.integers(100_000, 999_999, rows)
    comment = np.array([f"{project_names[p]} wk{w:02d} ticket FIN-{t} row {i + 1}: top-{1 + (t % 50)}% quality"
                        for i, (p, w, t) in enumerate(zip(project.tolist(), week.tolist(), ticket.tolist()))],
                       dtype=object)
    without = np.full(rows, "false", dtype=object)
    quiet = rng.random(rows) < 0.02
    without[quiet] = "true"
    title[quiet] = ""
    message[quiet] = ""

    bad = np.flatnonzero(rng.random(rows) < invalid)
    amount[bad] = np.array(BAD_AMOUNTS, dtype=object)[rng.integers(0, len(BAD_AMOUNTS), len(bad))]

    columns = {"user_id": user, "amount": amount, "assignment_id": assignment, "private_comment": comment,
               "public_title": title, "public_message": message, "without_message": without}
    if duplicates > 0:
        # ~duplicates of the rows are exact copies of an earlier row (a re-pasted block of the sheet)
        dup = np.flatnonzero(rng.random(rows) < duplicates)
        dup = dup[dup > 0]
        src = (rng.random(len(dup)) * dup).astype(np.int64)
        for values in columns.values():
            values[dup] = values[src]
    return columns


# --- tidy shape (the earlier generator) ------------------------------------------------------------

TITLES = [{"EN": "Great work"}, {"EN": "Bonus", "RU": "Бонус"}, {"EN": "Thanks!", "TR": "Teşekkürler"}]
MESSAGES = [
    {"EN": "Thank you for the careful labelling."},
    {"EN": "Extra reward for quality", "RU": "Доплата за качество"},
    {"EN": "Weekly top performer"},
]
AMOUNTS = ["0.5", "0.50", "1", "1.5", "2.25", "$3", "10", "0.05", "99.99", "100", "7.1"]


def make_tidy(rows: int, seed: int = 7, invalid: float = 0.01, duplicates: float = 0.01) -> pd.DataFrame:
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
    comment = np.array([f"project {p} week {w}" for p, w in zip(rng.integers(1, 400, rows), rng.integers(1, 53, rows))],
                       dtype=object)
    assignment = np.array(
        [f"{a:010x}--{b:024x}" for a, b in zip(rng.integers(0, 2**40, rows), rng.integers(0, 2**62, rows))],
        dtype=object,
    )
    without = np.full(rows, "false", dtype=object)
    quiet = rng.random(rows) < 0.05
    without[quiet] = "true"
    title[quiet] = ""
    message[quiet] = ""

    # invalid rows, spread over the kinds of mistakes finance sheets really contain
    bad = np.flatnonzero(rng.random(rows) < invalid)
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

    frame = pd.DataFrame({"user_id": user, "amount": amount, "assignment_id": assignment, "private_comment": comment,
                          "public_title": title, "public_message": message, "without_message": without})
    # duplicates: copy the 409 identity of an earlier row (another assignment, same bonus)
    dup = np.flatnonzero(rng.random(rows) < duplicates)
    dup = dup[dup > 0]
    src = (rng.random(len(dup)) * dup).astype(np.int64)
    for c in ("user_id", "amount", "private_comment", "public_title", "public_message", "without_message"):
        frame.loc[dup, c] = frame[c].to_numpy()[src]
    return frame


SHAPES = {"finance": make_finance, "tidy": make_tidy}


def make_table(rows: int, seed: int = 7, shape: str = "finance", invalid: float = 0.01,
               duplicates: float = 0.01) -> pa.Table:
    """The sheet as an Arrow table of text columns; an empty cell is null (an empty CSV field)."""
    made = SHAPES[shape](rows, seed, invalid, duplicates)
    arrays = []
    for c in COLUMNS:
        values = made[c].to_numpy(dtype=object) if isinstance(made, pd.DataFrame) else made[c]
        col = pa.array(values, type=pa.string())
        arrays.append(pc.if_else(pc.equal(col, ""), pa.scalar(None, pa.string()), col))
    return pa.table(arrays, names=COLUMNS)


def make_frame(rows: int, seed: int = 7, shape: str = "finance", invalid: float = 0.01,
               duplicates: float = 0.01) -> pd.DataFrame:
    return make_table(rows, seed, shape, invalid, duplicates).to_pandas()


def write(table: pa.Table, out: Path, name: str | None = None, formats: tuple[str, ...] = ("csv", "parquet")
          ) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    stem = name or f"sheet_{table.num_rows}"
    paths = []
    if "csv" in formats:  # quoted only where needed, empty cells empty: like a spreadsheet's export
        paths.append(out / f"{stem}.csv")
        with paths[-1].open("w", newline="", encoding="utf-8") as f:
            f.write(",".join(map(_csv_field, table.column_names)) + "\n")
            for batch in table.to_batches(200_000):
                cols = [_csv_column(batch.column(i)) for i in range(batch.num_columns)]
                f.write("\n".join(map(",".join, zip(*cols))) + "\n")
    if "parquet" in formats:
        paths.append(out / f"{stem}.parquet")
        pq.write_table(table, paths[-1])
    if "xlsx" in formats:
        paths.append(out / f"{stem}.xlsx")
        write_xlsx(table, paths[-1])
    return paths


_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def write_xlsx(table: pa.Table, path: Path) -> None:
    """The sheet as finance's Excel holds it: amounts that are numbers as numeric cells (12.3, not "12.30"), the
    rest ("$12.30", "1,50", "n/a") as text, every other cell as text; shared strings, as Excel writes them."""
    import xlsxwriter

    wb = xlsxwriter.Workbook(str(path), {"strings_to_numbers": False,
                                         "strings_to_formulas": False, "strings_to_urls": False})
    ws = wb.add_worksheet("Bonuses")
    ws.write_row(0, 0, table.column_names)
    amount_at = table.column_names.index("amount")
    r = 1
    for batch in table.to_batches(50_000):
        for values in zip(*(batch.column(i).to_pylist() for i in range(batch.num_columns))):
            for c, v in enumerate(values):
                if v is None:
                    continue
                if c == amount_at and _NUMBER.fullmatch(v):
                    ws.write_number(r, c, float(v))
                else:
                    ws.write_string(r, c, v)
            r += 1
    wb.close()


def _csv_field(value: str | None) -> str:
    """The csv module's QUOTE_MINIMAL, for one value (None -> an empty field)."""
    if value is None:
        return ""
    if any(ch in value for ch in ',"\r\n') or value != value.strip():
        return '"' + value.replace('"', '""') + '"'
    return value


def _csv_column(col: pa.Array) -> list[str]:
    """Each cell as a CSV field, escaped once per distinct value (the csv module would take ~20 s at 1M rows)."""
    codes, uniques = pd.factorize(np.asarray(col.to_numpy(zero_copy_only=False), dtype=object), use_na_sentinel=True)
    fields = np.array([_csv_field(u) for u in uniques] + [""], dtype=object)
    return fields[codes].tolist()


def time_stages(path: Path, chunk_size: int = 5_000) -> dict[str, float]:
    """Wall time of each offline stage on one sheet (seconds), in this process."""
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
    ap.add_argument("--shape", choices=sorted(SHAPES), default="finance")
    ap.add_argument("--invalid", type=float, default=0.01, help="share of rows with an invalid value (default 0.01)")
    ap.add_argument("--duplicates", type=float, default=0.01, help="share of duplicate rows (default 0.01)")
    ap.add_argument("--name", help="file stem (default sheet_<rows>)")
    ap.add_argument("--formats", default="csv,parquet", help="any of csv, parquet, xlsx")
    ap.add_argument("--time", action="store_true", help="time ingest/validate/keys/dedupe/plan on the files")
    args = ap.parse_args()
    t0 = time.perf_counter()
    table = make_table(args.rows, args.seed, args.shape, args.invalid, args.duplicates)
    paths = write(table, args.out, args.name, tuple(args.formats.split(",")))
    del table
    print(f"wrote {' and '.join(map(str, paths))} in {time.perf_counter() - t0:.1f}s")
    if args.time:
        for p in paths:
            time_stages(p)


if __name__ == "__main__":
    main()
