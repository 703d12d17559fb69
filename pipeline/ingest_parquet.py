"""Read a Parquet sheet into `SheetColumns`, each column turned into exact text only when it is taken."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.contract import SheetColumns, SheetOptions, one_line
from pipeline.errors import SheetError


def read_parquet(p: Path, options: SheetOptions) -> SheetColumns:
    """The Parquet sheet's columns as text, each read when it is taken: reading the whole table at once would
    hold every decoded column (and the decoder's buffers) together, ~1 GiB for 1M finance rows."""
    name = str(p)
    pf = pq.ParquetFile(p)
    names = [str(n) for n in pf.schema_arrow.names]
    meta = pf.metadata
    sizes = [sum(meta.row_group(g).column(i).total_uncompressed_size for g in range(meta.num_row_groups))
             for i in range(len(names))] if len(names) == meta.num_columns else [0] * len(names)

    def read(i: int) -> pa.ChunkedArray:
        try:
            return arrow_to_text(pf.read(columns=[names[i]]).column(0))
        except Exception as exc:
            raise SheetError(f"{name}: cannot read PARQUET sheet: {one_line(exc)}") from exc

    return SheetColumns(names, meta.num_rows, sizes, read)


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
