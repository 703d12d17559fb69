"""Read a Parquet sheet into `SheetColumns`, each column turned into exact text only when it is taken."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.contract import SheetColumns, SheetOptions, column_of, is_sheet_column, normalised_mapping, one_line
from pipeline.errors import SheetError


def read_parquet(p: Path, options: SheetOptions) -> SheetColumns:
    """The Parquet sheet's columns as text, each read when it is taken: reading the whole table at once would
    hold every decoded column (and the decoder's buffers) together, ~1 GiB for 1M finance rows.

    A column whose values have no text form (struct, list, map) is left out with a notice when we do not use it;
    when it is one we need (user_id, amount, ...) the sheet is refused naming it. Rows and columns are checked
    against the limits from the file's metadata, before any value is read."""
    name = str(p)
    pf = pq.ParquetFile(p)
    schema = pf.schema_arrow
    meta = pf.metadata
    limits = options.limits
    if len(schema.names) > limits.max_columns:
        raise SheetError(f"{name}: the sheet has {len(schema.names):,} columns, over the limit of "
                         f"{limits.max_columns:,} (raise it with --max-columns if the sheet is genuine)")
    if meta.num_rows > limits.max_rows:
        raise SheetError(f"{name}: the sheet has {meta.num_rows:,} rows, over the limit of {limits.max_rows:,} "
                         "(raise it with --max-rows if the sheet is genuine)")
    sizes_by_root: dict[str, int] = {}
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(meta.num_columns):
            leaf = group.column(c)
            root = leaf.path_in_schema.split(".")[0]
            sizes_by_root[root] = sizes_by_root.get(root, 0) + leaf.total_uncompressed_size
    mapping = normalised_mapping(options.mapping)
    names: list[str] = []
    notices: list[str] = []
    for f in schema:
        if _has_text(f.type):
            names.append(f.name)
        elif _needed(f.name, mapping):
            raise SheetError(f"{name}: column {f.name!r} holds {f.type} values, which have no text form; it is "
                             "needed, so write it as text or numbers")
        else:
            notices.append(f"column {f.name!r} ({f.type}) left out: its values have no text form")
    sizes = [sizes_by_root.get(n, 0) for n in names]

    def read(i: int) -> pa.ChunkedArray:
        try:
            return arrow_to_text(pf.read(columns=[names[i]]).column(0))
        except Exception as exc:
            raise SheetError(f"{name}: cannot read column {names[i]!r}: {one_line(exc)}") from exc

    return SheetColumns(names, meta.num_rows, sizes, read, notices=notices)


def _has_text(t: pa.DataType) -> bool:
    """Whether pyarrow can turn values of this type into text (nested types cannot)."""
    if pa.types.is_dictionary(t):
        return _has_text(t.value_type)
    if pa.types.is_nested(t):
        return False
    try:
        pa.array([], t).cast(pa.string())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, TypeError):
        return False
    return True


def _needed(column: str, mapping: Mapping[str, str]) -> bool:
    return is_sheet_column(column_of(column, mapping))


def arrow_to_text(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """Exact text of a Parquet column: decimals via Decimal, floats via repr (shortest round-trip)."""
    t = col.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return col.cast(pa.string())
    if pa.types.is_dictionary(t):
        return arrow_to_text(col.cast(t.value_type))
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
