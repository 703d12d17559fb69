"""Read finance sheets (CSV, Parquet, XLSX) into the canonical sheet frame of contracts.md.

Every cell is kept as text: "001" stays "001", "NA" stays "NA", an amount stays "1.50". Empty cells
become None. Each row keeps where it came from (`source_file`, `source_row`), so every later message
can point a finance person at the exact line of their sheet.

`source_row` is the record number as a spreadsheet shows it: the header is row 1, the first data record
row 2. A quoted CSV cell spanning several lines still counts as one record, and blank lines are not
counted (spreadsheet programs drop them on import too). Rows whose cells are all empty (trailing
",,,," lines of an Excel export) are dropped, without renumbering the others.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import structlog

from pipeline.contract import REQUIRED_COLUMNS, TEXT_COLUMNS, release_memory
from pipeline.errors import SheetError

log = structlog.get_logger(__name__)

FRAME_COLUMNS = ("source_file", "source_row") + TEXT_COLUMNS
LOCALISED_COLUMNS = ("public_title", "public_message")

_LANG_COLUMN = re.compile(r"^(public_title|public_message)_([a-z0-9]+)$")
_SEPARATORS = re.compile(r"[\s\-]+")
_REPEATED = frozenset({"user_id", "amount", "public_title", "public_message", "without_message"})
_REPEATED_TYPE = pa.dictionary(pa.int32(), pa.string())
_SUFFIXES = {".csv": "csv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet", ".xlsx": "xlsx"}


def normalise_header(name: object) -> str:
    """"  User ID " -> "user_id", "Public-Title EN" -> "public_title_en"."""
    return _SEPARATORS.sub("_", str(name).strip().lower()).strip("_")


def read_sheets(paths: Sequence[str | Path]) -> pd.DataFrame:
    """All rows of all sheets, in the order given, as the canonical frame.

    Raises SheetError (one line, naming the file) when a sheet cannot be read at all: missing, empty,
    unparseable, unknown extension, or a required column absent. Bad *values* are not errors here;
    validation reports those per row.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    frames = [read_sheet(p) for p in paths]
    if not frames:
        return _empty_frame()
    out = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return out


def read_sheet(path: str | Path) -> pd.DataFrame:
    """One sheet as the canonical frame; see `read_sheets`."""
    name = str(path)
    p = Path(path)
    kind = _SUFFIXES.get(p.suffix.lower())
    if kind is None:
        raise SheetError(f"{name}: unknown sheet format {p.suffix!r} (use .csv, .parquet or .xlsx)")
    if not p.exists():
        raise SheetError(f"{name}: file not found")
    if not p.is_file():
        raise SheetError(f"{name}: not a file")
    if p.stat().st_size == 0:
        raise SheetError(f"{name}: file is empty")
    try:
        if kind == "csv":
            sheet = _Columns.of_table(_read_csv(p))
        elif kind == "parquet":
            sheet = _parquet_columns(p, name)
        else:
            sheet = _Columns.of_table(_read_xlsx(p))
    except SheetError:
        raise
    except Exception as exc:  # any reader failure is "this file cannot be read", never a traceback
        raise SheetError(f"{name}: cannot read {kind.upper()} sheet: {_one_line(exc)}") from exc
    return _canonical(sheet, name)


class _Columns:
    """A sheet's string columns, each handed out once (`take`) so that it is freed once converted, or read only
    then (Parquet): the Arrow copy of a whole 1M-row sheet (~400 MB) is never alive beside its Python strings."""

    def __init__(self, names: list[str], num_rows: int, sizes: list[int],
                 read: Callable[[int], pa.ChunkedArray]) -> None:
        self.names, self.num_rows, self.sizes, self._read = names, num_rows, sizes, read

    @classmethod
    def of_table(cls, table: pa.Table) -> _Columns:
        cols: list[pa.ChunkedArray | None] = list(table.columns)

        def read(i: int) -> pa.ChunkedArray:
            col, cols[i] = cols[i], None
            assert col is not None, "a column is taken once"
            return col

        return cls([str(n) for n in table.column_names], table.num_rows, [c.nbytes for c in table.columns], read)

    def take(self, i: int) -> pa.ChunkedArray:
        return self._read(i)


# --- readers: each returns a pyarrow Table whose columns are all strings (nulls allowed) ----------


def _read_csv(p: Path) -> pa.Table:
    # The header is read with the csv module so that every column can be typed as string up front
    # (pyarrow would otherwise infer numbers and turn "001" into 1).
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
    # Columns that repeat their values by nature are dictionary-encoded as they are parsed: a title is then
    # stored once per block, not once per row (1M finance rows: ~250 MB less), and not hashed again later.
    types = {n: _REPEATED_TYPE if normalise_header(n) in _REPEATED else pa.string() for n in names}
    return pacsv.read_csv(
        p,
        read_options=pacsv.ReadOptions(column_names=names, skip_rows=1, use_threads=True),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types=types,
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )


def _parquet_columns(p: Path, name: str) -> _Columns:
    """The Parquet sheet's columns as text, each read when it is taken: reading the whole table at once would
    hold every decoded column (and the decoder's buffers) together, ~1 GiB for 1M finance rows."""
    pf = pq.ParquetFile(p)
    names = [str(n) for n in pf.schema_arrow.names]
    meta = pf.metadata
    sizes = [sum(meta.row_group(g).column(i).total_uncompressed_size for g in range(meta.num_row_groups))
             for i in range(len(names))] if len(names) == meta.num_columns else [0] * len(names)

    def read(i: int) -> pa.ChunkedArray:
        try:
            return _arrow_to_text(pf.read(columns=[names[i]]).column(0))
        except Exception as exc:
            raise SheetError(f"{name}: cannot read PARQUET sheet: {_one_line(exc)}") from exc

    return _Columns(names, meta.num_rows, sizes, read)


def _read_xlsx(p: Path) -> pa.Table:
    df = pd.read_excel(p, sheet_name=0, dtype=object, header=0, engine="openpyxl")
    cols = {}
    for i, col in enumerate(df.columns):
        values = [_excel_cell_text(v) for v in df.iloc[:, i].tolist()]
        cols[str(col)] = pa.array(values, type=pa.string())
    if not cols:
        raise SheetError(f"{p}: the first sheet has no header row")
    return pa.table(cols)


def _excel_cell_text(v: object) -> str | None:
    if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NaT:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v) if not v.is_integer() else str(int(v))
    return str(v)


def _arrow_to_text(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """Exact text of a Parquet column: decimals via Decimal, floats via repr (shortest round-trip)."""
    t = col.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return col.cast(pa.string())
    if pa.types.is_dictionary(t):
        return _arrow_to_text(col.cast(t.value_type))
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        return pc.cast(col, pa.string())
    if pa.types.is_decimal(t):
        return pa.chunked_array(
            [pa.array([None if d is None else _decimal_text(d) for d in col.to_pylist()], pa.string())]
        )
    if pa.types.is_floating(t):
        return pa.chunked_array(
            [pa.array([None if f is None or f != f else repr(float(f)) for f in col.to_pylist()], pa.string())]
        )
    return pc.cast(col, pa.string())


def _decimal_text(d: Decimal) -> str:
    return format(d, "f")


# --- canonical frame ------------------------------------------------------------------------------


def _canonical(sheet: _Columns, name: str) -> pd.DataFrame:
    """The canonical frame of the sheet's columns, taking (and so freeing) one Arrow column at a time."""
    raw_names = sheet.names
    norm = [normalise_header(n) for n in raw_names]
    seen: dict[str, str] = {}
    for raw, n in zip(raw_names, norm):
        if n in seen and not n.startswith("__unnamed"):
            raise SheetError(f"{name}: columns {seen[n]!r} and {raw!r} mean the same thing")
        seen[n] = raw
    columns = {n: i for i, n in enumerate(norm)}  # -> the column's position in `sheet`
    n_rows = sheet.num_rows

    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise SheetError(
            f"{name}: required column(s) {', '.join(missing)} missing (found: {', '.join(map(str, raw_names))})"
        )

    localised: dict[str, dict[str, int]] = {c: {} for c in LOCALISED_COLUMNS}
    unknown = []
    for n, i in columns.items():
        m = _LANG_COLUMN.match(n)
        if m:
            localised[m.group(1)][m.group(2).upper()] = i
        elif n not in TEXT_COLUMNS and not (n.startswith("__unnamed") and _all_empty(sheet.take(i))):
            unknown.append(seen[n])
    if unknown:
        log.warning("sheet_unknown_columns_ignored", sheet=name, columns=unknown)

    # All object columns are written straight into the 2-D block the frame will own (source_file first):
    # building the frame from separate arrays would copy them all once more to consolidate them.
    block = np.empty((1 + len(TEXT_COLUMNS), n_rows), dtype=object)  # filled with None
    block[0] = name
    for c in LOCALISED_COLUMNS:
        if localised[c] and c in columns:
            raise SheetError(f"{name}: both a {c!r} column and per-language {c}_xx columns; keep one of the two")
    # Largest Arrow column first (titles and messages: large in Arrow, a few shared strings in Python), and the
    # pool's freed memory handed back after each: the peak is then about the Arrow table, not the table plus
    # every Python string made from it.
    for c in sorted((c for c in TEXT_COLUMNS if c in columns), key=lambda c: -sheet.sizes[columns[c]]):
        _clean_text(sheet.take(columns[c]), out=block[1 + TEXT_COLUMNS.index(c)])  # freed once converted
        release_memory()
    for c in LOCALISED_COLUMNS:
        if localised[c]:
            langs = {lang: sheet.take(i) for lang, i in localised[c].items()}
            block[1 + TEXT_COLUMNS.index(c)] = _assemble_languages(langs, n_rows)
            del langs
            release_memory()
    cleaned = {c: block[i] for i, c in enumerate(TEXT_COLUMNS, start=1)}

    rows = np.arange(2, n_rows + 2, dtype=np.int64)
    # a row is dropped only if every cell is empty; look at the other cells only where both
    # required ones are empty (rare), not at every cell of the sheet
    keep = np.ones(n_rows, dtype=bool)
    candidates = np.flatnonzero((cleaned["user_id"] == None) & (cleaned["amount"] == None))  # noqa: E711
    if len(candidates):
        empty = np.ones(len(candidates), dtype=bool)
        for arr in cleaned.values():
            empty &= arr[candidates] == None  # noqa: E711 - elementwise on an object array
        keep[candidates[empty]] = False
    # explicit object dtype: pandas 3 would otherwise infer its own string dtype (NaN, not None)
    frame = pd.DataFrame(block.T, columns=["source_file", *TEXT_COLUMNS], dtype=object, copy=False)
    frame.insert(1, "source_row", rows)
    if not keep.all():
        dropped = int((~keep).sum())
        log.info("sheet_empty_rows_dropped", sheet=name, rows=dropped)
        frame = frame.loc[keep].reset_index(drop=True)
    return frame


def _trimmed(col: pa.ChunkedArray) -> pa.ChunkedArray:
    col = pc.utf8_trim_whitespace(col)
    return pc.if_else(pc.equal(col, ""), pa.scalar(None, pa.string()), col)


def _clean_text(col: pa.ChunkedArray, out: np.ndarray | None = None) -> np.ndarray:
    """Object array of str/None (trimmed; empty -> None), written into `out` when given.

    Sheets repeat values (amounts, titles, user ids), so each distinct text is cleaned and turned into
    a Python string once and shared by its rows: far less work and allocation than per cell.
    """
    n = len(col)
    if out is None:
        out = np.empty(n, dtype=object)
    if n == 0:
        return out
    if pa.types.is_dictionary(col.type):  # encoded by the CSV reader, a dictionary per block: unify them
        encoded = col.unify_dictionaries().combine_chunks()
    else:
        sample = col.slice(0, 20_000)
        if pc.count_distinct(sample).as_py() > 0.95 * len(sample):  # all distinct (assignment ids): convert directly
            out[:] = _trimmed(col).to_numpy(zero_copy_only=False)
            return out
        encoded = pc.dictionary_encode(col).combine_chunks()
    uniques = np.concatenate([_trimmed(encoded.dictionary).to_numpy(zero_copy_only=False).astype(object),
                              np.array([None], dtype=object)])
    np.take(uniques, encoded.indices.fill_null(len(uniques) - 1).to_numpy(), out=out)
    return out


def _all_empty(col: pa.ChunkedArray) -> bool:
    return _trimmed(col).null_count == len(col)


def _assemble_languages(langs: dict[str, pa.ChunkedArray], n_rows: int) -> np.ndarray:
    """Per-language columns -> one JSON object text per row ({"EN": ..., "RU": ...}); None if all empty.

    Built once per distinct combination of texts, not once per row: sheets repeat the same title.
    """
    codes = sorted(langs)
    arrays = [_trimmed(langs[c]) for c in codes]
    # \x00 cannot appear in a sheet cell, so it separates texts unambiguously; \x01 marks "empty".
    joined = pc.binary_join_element_wise(
        *[pc.fill_null(a, "\x01") for a in arrays], "\x00"
    )
    uniq = pc.unique(joined)
    idx = pc.index_in(joined, uniq).to_numpy(zero_copy_only=False)
    texts = []
    for combo in uniq.to_pylist():
        obj = {c: v for c, v in zip(codes, combo.split("\x00")) if v != "\x01"}
        texts.append(
            json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":")) if obj else None
        )
    return np.array(texts, dtype=object)[idx] if n_rows else np.empty(0, dtype=object)


def _empty_frame() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series([], dtype=object) for c in FRAME_COLUMNS})
    frame["source_row"] = frame["source_row"].astype(np.int64)
    return frame


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]
