"""Read finance sheets (CSV, Parquet, XLSX) into the canonical sheet frame of contracts.md.

Every cell is kept as text: "001" stays "001", "NA" stays "NA", an amount stays "1.50". Empty cells
become None. Each row keeps where it came from (`source_file`, `source_row`), so every later message
can point a finance person at the exact line of their sheet.

`source_row` is the row number a spreadsheet shows: the header is row 1 (or the row `--header-row` names, or
the one found below title rows), the first data record the row after it. A quoted CSV cell spanning several
lines is one row; a blank CSV line is a row of its own (LibreOffice and Excel show it as an empty row), so the
records around it keep the numbers the spreadsheet shows. Rows whose cells are all empty (trailing ",,,," lines
of an Excel export, blank lines) are dropped, without renumbering the others.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import structlog

from pipeline.contract import (
    CARRIED_PREFIX,
    REQUIRED_COLUMNS,
    TEXT_COLUMNS,
    SheetColumns,
    SheetOptions,
    column_letters,
    column_of,
    normalise_header,
    normalised_mapping,
    one_line,
    release_memory,
)
from pipeline.errors import SheetError
from pipeline.ingest_csv import read_csv
from pipeline.ingest_parquet import read_parquet
from pipeline.ingest_xlsx import read_xlsx

log = structlog.get_logger(__name__)

FRAME_COLUMNS = ("source_file", "source_row") + TEXT_COLUMNS
LOCALISED_COLUMNS = ("public_title", "public_message")

_LANG_COLUMN = re.compile(r"^(public_title|public_message)_([a-z0-9]+)$")
# a blank header, as our CSV reader and pandas (.xlsx) name it; the number is the column's 0-based position
_UNNAMED = re.compile(r"__unnamed_(\d+)|Unnamed: (\d+)")
_READERS = {".csv": read_csv, ".txt": read_csv, ".parquet": read_parquet, ".pq": read_parquet, ".xlsx": read_xlsx}

__all__ = ["FRAME_COLUMNS", "carried_columns", "normalise_header", "read_sheet", "read_sheets"]


def read_sheets(paths: Sequence[str | Path], options: SheetOptions | None = None,
                notices: list[str] | None = None) -> pd.DataFrame:
    """All rows of all sheets, in the order given, as the canonical frame; what a person should know about how
    they were read (detected encoding, header row found, hidden rows) is appended to `notices`.

    Raises SheetError (one line, naming the file) when a sheet cannot be read at all: missing, empty,
    unparseable, unknown extension, over a limit, or a required column absent. Bad *values* are not errors
    here; validation reports those per row.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    frames = [read_sheet(p, options, notices) for p in paths]
    if not frames:
        return _empty_frame()
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def carried_columns(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(canonical, carried): the frame without the sheets' other columns (`sheet:<header>`), and those columns
    alone (same index), which no stage reads: the report puts them beside each row."""
    extra = [c for c in frame.columns if str(c).startswith(CARRIED_PREFIX)]
    if not extra:
        return frame, frame.iloc[:, :0]
    return frame.drop(columns=extra), frame[extra]


def read_sheet(path: str | Path, options: SheetOptions | None = None, notices: list[str] | None = None
               ) -> pd.DataFrame:
    """One sheet as the canonical frame; see `read_sheets`."""
    options = options or SheetOptions()
    name = str(path)
    p = Path(path)
    reader = _READERS.get(p.suffix.lower())
    kind = p.suffix.lower().lstrip(".").upper()
    if reader is None:
        raise SheetError(f"{name}: unknown sheet format {p.suffix!r} (use .csv, .parquet or .xlsx)")
    if not p.exists():
        raise SheetError(f"{name}: file not found")
    if not p.is_file():
        raise SheetError(f"{name}: not a file")
    size = p.stat().st_size
    if size == 0:
        raise SheetError(f"{name}: file is empty")
    limit_mb = options.limits.max_file_mb
    if size > limit_mb * 2**20:
        raise SheetError(f"{name}: the file is {size / 2**20:,.1f} MB, over the limit of {limit_mb:,g} MB "
                         "(raise it with --max-file-mb if the sheet is genuine)")
    try:
        sheet = reader(p, options)
    except SheetError:
        raise
    except Exception as exc:  # any reader failure is "this file cannot be read", never a traceback
        raise SheetError(f"{name}: cannot read {kind} sheet: {one_line(exc)}") from exc
    frame = _canonical(sheet, name, options)
    for notice in sheet.notices:
        log.info("sheet_notice", sheet=name, notice=notice)
    if notices is not None:
        notices.extend(f"{p.name}: {n}" for n in sheet.notices)
    return frame


# --- canonical frame ------------------------------------------------------------------------------


def _canonical(sheet: SheetColumns, name: str, options: SheetOptions) -> pd.DataFrame:
    """The canonical frame of the sheet's columns, taking (and so freeing) one Arrow column at a time.

    Headers go through the configured column mapping (`options.mapping`, compared normalised) before they are
    matched to our columns. The sheet's other columns are carried as text columns `sheet:<header>` (Arrow
    strings: a few bytes a cell, not a Python object), for the report; `carried_columns` splits them off.
    """
    raw_names = sheet.names
    mapping = normalised_mapping(options.mapping)
    norm = [column_of(n, mapping) for n in raw_names]
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
            f"{_mapping_hint(raw_names, missing, options)}"
        )

    localised: dict[str, dict[str, int]] = {c: {} for c in LOCALISED_COLUMNS}
    carried: dict[str, pa.ChunkedArray] = {}
    for n, i in columns.items():
        m = _LANG_COLUMN.match(n)
        if m:
            localised[m.group(1)][m.group(2).upper()] = i
        elif n not in TEXT_COLUMNS:
            _carry(sheet, i, carried, options.limits.max_cell_chars)
    if carried:
        headers = [c.removeprefix(CARRIED_PREFIX) for c in carried]
        log.warning("sheet_unknown_columns", sheet=name, columns=headers)
        sheet.notices.append(f"columns payout does not read, carried into the report as sheet:<header>: "
                             f"{', '.join(headers)}")

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

    rows = np.arange(2, n_rows + 2, dtype=np.int64) if sheet.rows is None else np.asarray(sheet.rows, np.int64)
    # a row is dropped only if every cell is empty; look at the other cells only where both
    # required ones are empty (rare), not at every cell of the sheet
    keep = np.ones(n_rows, dtype=bool)
    candidates = np.flatnonzero((cleaned["user_id"] == None) & (cleaned["amount"] == None))  # noqa: E711
    if len(candidates):
        empty = np.ones(len(candidates), dtype=bool)
        for arr in cleaned.values():
            empty &= arr[candidates] == None  # noqa: E711 - elementwise on an object array
        for col in carried.values():  # a row with only a carried cell filled is not empty: it is reported
            empty &= col.is_null().to_numpy(zero_copy_only=False)[candidates]
        keep[candidates[empty]] = False
    # explicit object dtype: pandas 3 would otherwise infer its own string dtype (NaN, not None)
    frame = pd.DataFrame(block.T, columns=["source_file", *TEXT_COLUMNS], dtype=object, copy=False)
    frame.insert(1, "source_row", rows)
    if carried:
        extra = pd.DataFrame({c: pd.arrays.ArrowExtensionArray(col) for c, col in carried.items()}, index=frame.index)
        frame = pd.concat([frame, extra], axis=1)
    if not keep.all():
        dropped = int((~keep).sum())
        log.info("sheet_empty_rows_dropped", sheet=name, rows=dropped)
        frame = frame.loc[keep].reset_index(drop=True)
    return frame


def _mapping_hint(raw_names: Sequence[str], missing: Sequence[str], options: SheetOptions) -> str:
    """What to try when required columns are missing: the configured mapping that fits the headers, else how
    to map them."""
    headers = {normalise_header(n) for n in raw_names}
    given = normalised_mapping(options.mapping)
    known = {k: normalised_mapping(m) for k, m in options.known_mappings.items()}
    fits = [k for k, m in known.items() if m != given and set(missing) <= {column_of(h, m) for h in headers}]
    if fits:
        return f"; the headers fit column mapping {fits[0]!r}: pass --mapping {fits[0]}"
    if options.mapping:
        return f"; the column mapping given maps none of these headers to {', '.join(missing)}"
    names = f" (configured: {', '.join(sorted(known))})" if known else ""
    return (f"; if the sheet names them otherwise, pass --mapping NAME{names}, a [mappings.NAME] table of "
            "\"sheet header\" = \"column\" in a config")


def _carry(sheet: SheetColumns, i: int, carried: dict[str, pa.ChunkedArray], max_chars: int) -> None:
    """Column `i`, one payout does not read, as trimmed text into `carried` under `sheet:<header>`, each cell cut to
    `max_chars` (said in a notice: a 10 MB cell beside the payout's columns is not a reason to refuse the sheet).
    A blank-headed column with no value is an export's empty edge, not a column. (A column with no text form, a
    nested Parquet one, never gets here: its reader leaves it out with a notice.)"""
    raw = sheet.names[i]
    unnamed = _UNNAMED.fullmatch(raw)
    header = f"column {column_letters(int(unnamed.group(1) or unnamed.group(2)) + 1)}" if unnamed else raw.strip()
    col = _trimmed(sheet.take(i))
    if unnamed and col.null_count == len(col):
        return
    long = pc.greater(pc.utf8_length(col), max_chars)
    if n_long := pc.sum(long).as_py():
        col = pc.if_else(long, pc.utf8_slice_codeunits(col, 0, max_chars), col)
        sheet.notices.append(f"{n_long:,} cell(s) of column {header!r} longer than {max_chars:,} characters were "
                             "cut to that length in the report (--max-cell-chars)")
    carried[CARRIED_PREFIX + header] = col


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
