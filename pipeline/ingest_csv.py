"""Read a CSV (or .txt) sheet into `SheetColumns`: every cell as text, the header read first so that no column is
typed by guessing (pyarrow would turn "001" into 1)."""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

from pipeline.contract import SheetColumns, SheetOptions, normalise_header
from pipeline.errors import SheetError

# Columns that repeat their values by nature are dictionary-encoded as they are parsed: a title is then stored
# once per block, not once per row (1M finance rows: ~250 MB less), and not hashed again later.
_REPEATED = frozenset({"user_id", "amount", "public_title", "public_message", "without_message"})
_REPEATED_TYPE = pa.dictionary(pa.int32(), pa.string())


def read_csv(p: Path, options: SheetOptions) -> SheetColumns:
    with open(p, encoding="utf-8-sig", newline="") as fh:
        try:
            header = next(csv.reader(fh))
        except StopIteration:
            raise SheetError(f"{p}: file is empty") from None
    if not any(h.strip() for h in header):
        raise SheetError(f"{p}: the first line is not a header")
    names = [h if h.strip() else f"__unnamed_{i}" for i, h in enumerate(header)]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise SheetError(f"{p}: repeated column name(s) {', '.join(map(repr, dup))}")
    types = {n: _REPEATED_TYPE if normalise_header(n) in _REPEATED else pa.string() for n in names}
    table = pacsv.read_csv(
        p,
        read_options=pacsv.ReadOptions(column_names=names, skip_rows=1, use_threads=True),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types=types,
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )
    return SheetColumns.of_table(table)
