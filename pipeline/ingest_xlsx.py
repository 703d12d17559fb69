"""Read an .xlsx sheet into `SheetColumns`: every cell as the text the spreadsheet shows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.contract import SheetColumns, SheetOptions
from pipeline.errors import SheetError


def read_xlsx(p: Path, options: SheetOptions) -> SheetColumns:
    df = pd.read_excel(p, sheet_name=0, dtype=object, header=0, engine="openpyxl")
    cols = {}
    for i, col in enumerate(df.columns):
        values = [_excel_cell_text(v) for v in df.iloc[:, i].tolist()]
        cols[str(col)] = pa.array(values, type=pa.string())
    if not cols:
        raise SheetError(f"{p}: the first sheet has no header row")
    return SheetColumns.of_table(pa.table(cols))


def _excel_cell_text(v: object) -> str | None:
    if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NaT:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v) if not v.is_integer() else str(int(v))
    return str(v)
