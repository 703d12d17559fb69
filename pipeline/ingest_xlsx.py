"""Read an .xlsx sheet into `SheetColumns`: every cell as the text the spreadsheet shows, rows numbered as it
shows them, and nothing read in bulk before the file is known to be within its limits.

Two passes, both bounded in memory:
1. The zip's directory (uncompressed sizes, compression ratios) and a streaming scan of each worksheet's XML:
   its `<dimension>`, the cell references it really holds (a 4.7 KB file may claim cell XFD1048576), hidden
   rows and columns, and the cells whose text calamine cannot give: formulas with no cached value (written by
   a script, never opened in Excel) and error values (#DIV/0!).
2. python-calamine (Rust) reads the one sheet chosen: about a tenth of openpyxl's CPU.

Cell texts: ints "12", text as is, booleans "true"/"false", dates ISO, empty -> None. In the amount column a
non-whole number within 1e-9 of a cent is written to 2 decimals (Excel stores =0.1+0.2 as 0.30000000000000004
and shows 0.30); any other number keeps its shortest repr, so validation refuses "0.123" as before. Other
columns are never rounded: a numeric user id or comment reads as it is stored.
"""

from __future__ import annotations

import datetime as dt
import itertools
import posixpath
import re
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast
from xml.etree import ElementTree
from xml.sax.saxutils import unescape

import numpy as np
import pyarrow as pa
from python_calamine import CalamineWorkbook

from pipeline.contract import (
    REQUIRED_COLUMNS,
    SheetColumns,
    SheetLimits,
    SheetOptions,
    column_letters,
    column_of,
    names_required,
    normalised_mapping,
)
from pipeline.errors import SheetError

_CHUNK = 4 << 20  # bytes of sheet XML decompressed at a time
_MAX_CARRY = 64 << 20  # one row's XML may not exceed this (a row of 16,384 long cells is ~2 GB: refused)
_MAX_RATIO = 1000  # deflate cannot honestly exceed ~1032:1; a spreadsheet's XML stays far below
_HEADER_SEARCH_ROWS = 100  # title rows above the header are looked through this far
_LISTED = 10  # hidden rows/columns named in a notice
_BLOCK_ROWS = 20_000  # rows converted to Arrow at a time

_NS = r"(?:[A-Za-z_][\w.-]*:)?"  # an optional namespace prefix (<x:row>)
_DIMENSION = re.compile(rf"<{_NS}dimension\b[^>]*?\bref=\"([^\"]*)\"".encode())
_COL = re.compile(rf"<{_NS}col\b([^>]*)>".encode())
_SHEET_DATA = re.compile(rf"<{_NS}sheetData\b".encode())
_ROW = re.compile(rf"<{_NS}row\b([^>]*)>".encode())
_CELL_REF = re.compile(rf"<{_NS}c\b[^>]*?\br=\"([A-Z]{{1,4}})([0-9]{{1,10}})\"".encode())
_CELL = re.compile(rf"<{_NS}c\b([^>]*?)(?:/>|>(.*?)</{_NS}c>)".encode(), re.S)
_FORMULA = re.compile(rf"<{_NS}f\b([^>]*?)(?:/>|>(.*?)</{_NS}f>)".encode(), re.S)
_VALUE = re.compile(rf"<{_NS}v\b[^>]*>(.*?)</{_NS}v>".encode(), re.S)
_HAS_VALUE = re.compile(rf"<{_NS}(?:v|is|f)\b".encode())
_ATTR = re.compile(rb"\b([\w:]+)=\"([^\"]*)\"")
_REF = re.compile(r"^\$?([A-Z]{1,4})\$?([0-9]{1,10})$")
_TRUE = (b"1", b"true")


@dataclass
class _Scan:
    """What the worksheet's XML says about itself, without reading its values."""

    has_values: bool = False
    max_row: int = 0
    max_col: int = 0
    hidden_rows: list[int] = field(default_factory=list)
    hidden_cols: list[tuple[int, int]] = field(default_factory=list)  # (first, last) column numbers, 1-based
    texts: dict[tuple[int, int], str] = field(default_factory=dict)  # (row, col) -> text calamine cannot give


def read_xlsx(p: Path, options: SheetOptions) -> SheetColumns:
    limits = options.limits
    with zipfile.ZipFile(p) as zf:
        _check_zip(p, zf, limits)
        sheets, hidden = _worksheets(zf)
        if not sheets:
            raise SheetError(f"{p}: the workbook has no worksheet")
        if options.sheet is not None:
            chosen = _named(p, sheets, options.sheet)
            scans = {chosen: _scan(p, zf, sheets[chosen], chosen, limits)}
        else:
            scans = {name: _scan(p, zf, member, name, limits) for name, member in sheets.items()}
            with_data = [n for n, s in scans.items() if s.has_values]
            if len(with_data) > 1:
                shown = _names(with_data) + (f"; hidden: {_names([n for n in with_data if n in hidden])}"
                                             if any(n in hidden for n in with_data) else "")
                raise SheetError(f"{p}: {len(with_data)} sheets hold data ({shown}): choose the one to "
                                 f"pay with --sheet NAME")
            if not with_data:
                raise SheetError(f"{p}: no sheet holds data ({_names(list(sheets))})")
            chosen = with_data[0]
    notices = []
    if options.sheet is None and len(sheets) > 1:
        empty = [n for n in sheets if n != chosen]
        notices.append(f"read sheet {chosen!r}, the only one with data ({_names(empty)} "
                       f"{'is' if len(empty) == 1 else 'are'} empty)")
    with CalamineWorkbook.from_path(str(p)) as wb:
        grid = wb.get_sheet_by_name(chosen)
        start, end = grid.start, grid.end
        first_col = start[1] + 1 if start else 1  # 1-based column of grid cell 0
        n_rows = end[0] + 1 if end else 0
        rows = cast(Iterator[list[object]], grid.iter_rows())  # row i is the spreadsheet's row i + 1
        return _columns(p, rows, n_rows, first_col, scans[chosen], options, notices)


# --- pass 1: the zip and the sheet XML ------------------------------------------------------------


def _check_zip(p: Path, zf: zipfile.ZipFile, limits: SheetLimits) -> None:
    total = 0
    for info in zf.infolist():
        total += info.file_size
        if info.file_size > 1 << 20 and info.file_size > _MAX_RATIO * max(info.compress_size, 1):
            raise SheetError(f"{p}: zip entry {info.filename!r} claims {info.file_size / 2**20:,.0f} MB from "
                             f"{info.compress_size:,} bytes (over {_MAX_RATIO}:1): not a file a spreadsheet writes")
    limit = limits.max_xlsx_unzipped_mb
    if total > limit * 2**20:
        raise SheetError(f"{p}: the workbook unzips to {total / 2**20:,.1f} MB, over the limit of {limit:,g} MB "
                         "(raise it with --max-xlsx-unzipped-mb if the sheet is genuine)")


def _worksheets(zf: zipfile.ZipFile) -> tuple[dict[str, str], set[str]]:
    """Worksheet name -> its XML member, in the workbook's order (chart sheets left out); the hidden ones."""
    book = ElementTree.fromstring(_small(zf, "xl/workbook.xml"))
    rels_name = "xl/_rels/workbook.xml.rels"
    rels = ElementTree.fromstring(_small(zf, rels_name)) if rels_name in zf.namelist() else None
    targets: dict[str, str] = {}
    for rel in rels if rels is not None else ():
        if rel.get("Type", "").endswith("/worksheet"):
            target = rel.get("Target", "")
            member = target.lstrip("/") if target.startswith("/") else posixpath.normpath(f"xl/{target}")
            targets[rel.get("Id", "")] = member
    out: dict[str, str] = {}
    hidden: set[str] = set()
    for sheet in book.iter():
        if sheet.tag.rsplit("}", 1)[-1] != "sheet":
            continue
        rid = next((v for k, v in sheet.attrib.items() if k.rsplit("}", 1)[-1] == "id"), "")
        if rid in targets and targets[rid] in zf.namelist():
            out[sheet.get("name", "")] = targets[rid]
            if sheet.get("state") in ("hidden", "veryHidden"):
                hidden.add(sheet.get("name", ""))
    return out, hidden


def _small(zf: zipfile.ZipFile, member: str) -> bytes:
    """A part that lists sheets, read whole: a few KB in any real workbook."""
    if zf.getinfo(member).file_size > _MAX_CARRY:
        raise ValueError(f"{member} is over {_MAX_CARRY >> 20} MB: not a workbook a spreadsheet writes")
    return zf.read(member)


def _named(p: Path, sheets: Mapping[str, str], wanted: str) -> str:
    if wanted in sheets:
        return wanted
    folded = [n for n in sheets if n.casefold() == wanted.strip().casefold()]
    if len(folded) == 1:
        return folded[0]
    raise SheetError(f"{p}: no sheet named {wanted!r} (its sheets: {_names(list(sheets))}); give one of them "
                     "with --sheet NAME")


def _names(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names)


def _chunks(zf: zipfile.ZipFile, member: str) -> Iterator[bytes]:
    with zf.open(member) as fh:
        while chunk := fh.read(_CHUNK):
            yield chunk


def _scan(p: Path, zf: zipfile.ZipFile, member: str, name: str, limits: SheetLimits) -> _Scan:
    """Stream the sheet's XML once: its limits checked from the <dimension> first, then from every row and cell
    reference as they come (a missing or lying dimension does not get past), in memory bounded by one row."""
    scan = _Scan()
    buf = b""
    in_data = False
    shared: dict[bytes, bytes] = {}  # shared formula id -> the master cell's formula text
    for chunk in _chunks(zf, member):
        buf += chunk
        if not in_data:
            m = _SHEET_DATA.search(buf)
            if m is None:
                if len(buf) > _MAX_CARRY:
                    raise SheetError(f"{p}: sheet {name!r} has over {_MAX_CARRY >> 20} MB before its data")
                continue
            _head(p, name, buf[:m.start()], scan, limits)
            buf, in_data = buf[m.start():], True
        cut = _last_row_start(buf)  # everything before it is whole rows
        if cut <= 0:
            if len(buf) > _MAX_CARRY:
                raise SheetError(f"{p}: sheet {name!r} has a row over {_MAX_CARRY >> 20} MB of XML")
            continue
        _rows(p, name, buf[:cut], scan, limits, shared)
        buf = buf[cut:]
    if not in_data:
        _head(p, name, buf, scan, limits)
    elif buf:
        _rows(p, name, buf, scan, limits, shared)
    return scan


def _head(p: Path, name: str, head: bytes, scan: _Scan, limits: SheetLimits) -> None:
    """What comes before <sheetData>: the dimension the file claims (checked at once) and hidden columns."""
    m = _DIMENSION.search(head)
    if m:
        end = m.group(1).decode("ascii", "replace").split(":")[-1].upper()
        ref = _REF.match(end)
        if ref:
            _check_extent(p, name, int(ref.group(2)), _col_number(ref.group(1)), limits, f"says it spans A1:{end}")
    for col in _COL.finditer(head):
        attrs = dict(_ATTR.findall(col.group(1)))
        if attrs.get(b"hidden") in _TRUE:
            try:
                scan.hidden_cols.append((int(attrs[b"min"]), int(attrs[b"max"])))
            except (KeyError, ValueError):
                pass


def _last_row_start(buf: bytes) -> int:
    at = buf.rfind(b"<row")
    prefixed = buf.rfind(b":row ")
    if prefixed > at:
        at = buf.rfind(b"<", 0, prefixed)
    return at


def _rows(p: Path, name: str, seg: bytes, scan: _Scan, limits: SheetLimits, shared: dict[bytes, bytes]) -> None:
    """Whole rows of <sheetData>: extent, hidden rows, and the cells calamine cannot give the text of."""
    if not scan.has_values and _HAS_VALUE.search(seg):
        scan.has_values = True
    if b"hidden=" in seg:
        for attrs in _ROW.findall(seg):
            a = dict(_ATTR.findall(attrs))
            if a.get(b"hidden") in _TRUE and a.get(b"r", b"").isdigit():
                scan.hidden_rows.append(int(a[b"r"]))
    rows, cols = _extent(seg)
    if rows > scan.max_row or cols > scan.max_col:
        scan.max_row, scan.max_col = max(rows, scan.max_row), max(cols, scan.max_col)
        _check_extent(p, name, scan.max_row, scan.max_col, limits,
                      f"reaches {column_letters(scan.max_col)}{scan.max_row}")
    if b"<f" in seg or b"t=\"e\"" in seg or b":f" in seg:
        _formulas_and_errors(seg, scan, shared)


_FAST_ROW = re.compile(rb"<row r=\"([0-9]{1,10})\"")


def _extent(seg: bytes) -> tuple[int, int]:
    """The last row and column the segment's cells reach, from a few C-speed scans rather than a regex match per
    cell: the rows' numbers and the first rows' columns give candidates, and one search each asks whether any
    cell reference goes beyond them (then every reference is read). XML not written the usual way (r="..."
    first, no namespace prefix) has every reference read."""
    row_numbers = _FAST_ROW.findall(seg)
    cells = seg.count(b"<c ") + seg.count(b"<c>")
    if len(row_numbers) != seg.count(b"<row ") + seg.count(b"<row>") or cells != seg.count(b'<c r="') \
            or b":c " in seg or b":row " in seg or (cells and not row_numbers):
        return _extent_exact(seg)
    rows = max(map(int, row_numbers), default=0)
    _, cols = _extent_exact(seg[:1 << 16])
    if cells and (re.search(b'<c r="[A-Z]{1,4}(?:%s)"' % _greater(str(rows), "0123456789"), seg)
                  or re.search(b'<c r="(?:%s)[0-9]' % _greater(column_letters(cols), "ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
                               seg)):
        return _extent_exact(seg)
    return rows, cols


def _greater(value: str, alphabet: str) -> bytes:
    """A regex alternation matching the tokens of `alphabet` (no leading zeros) greater than `value`: longer
    ones, or as long with a greater symbol after a common prefix."""
    n = len(value)
    alts = [f"[{alphabet[0]}-{alphabet[-1]}]{{{n + 1},}}"]
    for i, ch in enumerate(value):
        k = alphabet.index(ch)
        if k + 1 < len(alphabet):
            alts.append(f"{value[:i]}[{alphabet[k + 1]}-{alphabet[-1]}][{alphabet[0]}-{alphabet[-1]}]{{{n - i - 1}}}")
    return "|".join(alts).encode() if alts else b"(?!)"


def _extent_exact(seg: bytes) -> tuple[int, int]:
    rows = max((int(r) for r in re.findall(rb"\br=\"([0-9]{1,10})\"", b" ".join(_ROW.findall(seg)))), default=0)
    refs = set(_CELL_REF.findall(seg))
    if refs:
        rows = max(rows, max(int(r) for _, r in refs))
    cols = max((_col_number(c.decode()) for c in {c for c, _ in refs}), default=0)
    return rows, cols


def _formulas_and_errors(seg: bytes, scan: _Scan, shared: dict[bytes, bytes]) -> None:
    for cell in _CELL.finditer(seg):
        attrs, inner = dict(_ATTR.findall(cell.group(1))), cell.group(2) or b""
        ref = _REF.match(attrs.get(b"r", b"").decode("ascii", "replace"))
        if ref is None:
            continue
        where = (int(ref.group(2)), _col_number(ref.group(1)))
        value = _VALUE.search(inner)
        cached = value is not None and value.group(1).strip() != b""
        f = _FORMULA.search(inner)
        if f is not None:
            f_attrs, text = dict(_ATTR.findall(f.group(1))), f.group(2) or b""
            if f_attrs.get(b"t") == b"shared" and b"si" in f_attrs:
                if text:
                    shared[f_attrs[b"si"]] = text
                text = text or shared.get(f_attrs[b"si"], b"")
            if not cached:
                scan.texts[where] = "=" + _xml_text(text)
                continue
        if attrs.get(b"t") == b"e" and value is not None:
            scan.texts[where] = _xml_text(value.group(1))


def _xml_text(raw: bytes) -> str:
    return unescape(raw.decode("utf-8", "replace"), {"&quot;": '"', "&apos;": "'"})


def _check_extent(p: Path, name: str, rows: int, cols: int, limits: SheetLimits, what: str) -> None:
    """The sheet as a person sees it, from A1 to its last cell: rows x columns, rows, columns."""
    cells = rows * cols
    if cells > limits.max_xlsx_cells:
        raise SheetError(f"{p}: sheet {name!r} {what}: {cells:,} cells, over the limit of {limits.max_xlsx_cells:,} "
                         "(raise it with --max-xlsx-cells if the sheet is genuine)")
    if rows - 1 > limits.max_rows:
        raise SheetError(f"{p}: sheet {name!r} {what}: {rows - 1:,} rows below row 1, over the limit of "
                         f"{limits.max_rows:,} (raise it with --max-rows if the sheet is genuine)")
    if cols > limits.max_columns:
        raise SheetError(f"{p}: sheet {name!r} {what}: {cols:,} columns, over the limit of {limits.max_columns:,} "
                         "(raise it with --max-columns if the sheet is genuine)")


def _col_number(letters: str) -> int:
    n = 0
    for ch in letters:
        n = n * 26 + ord(ch) - 64
    return n


# --- pass 2: the chosen sheet's values as columns ------------------------------------------------


def _columns(p: Path, rows: Iterator[list[object]], n_rows: int, first_col: int, scan: _Scan,
             options: SheetOptions, notices: list[str]) -> SheetColumns:
    """The table below the header, converted to Arrow a block of rows at a time: a sheet's cells never all live
    as Python objects at once (100k rows of JSON titles would be ~150 MB of str)."""
    wanted = _HEADER_SEARCH_ROWS if options.header_row is None else options.header_row
    head = list(itertools.islice(rows, wanted))
    header_at = _header_index(p, head, n_rows, options)  # 0-based
    if header_at > 0:
        notices.append(f"header found on row {header_at + 1}" if options.header_row is None
                       else f"header read from row {header_at + 1} (--header-row)")
    width = max(map(len, head), default=0)
    header = head[header_at] + [""] * (width - len(head[header_at]))
    names = _header_names(header, first_col)
    mapping = normalised_mapping(options.mapping)
    amount = [column_of(n, mapping) == "amount" for n in names]
    first_row = header_at + 2  # the spreadsheet's number of the first row below the header
    texts_at: dict[int, list[tuple[int, str]]] = {}  # column index -> (row, text) calamine cannot give
    for (row, col), text in scan.texts.items():
        if row >= first_row and 0 <= col - first_col < width:
            texts_at.setdefault(col - first_col, []).append((row, text))
    hidden = {r for r in scan.hidden_rows if r >= first_row}
    hidden_read: list[int] = []
    chunks: list[list[pa.Array]] = [[] for _ in range(width)]
    at = first_row
    body = itertools.chain(head[header_at + 1:], rows)
    del head
    while block := list(itertools.islice(body, _BLOCK_ROWS)):
        for r in block:
            if len(r) < width:  # calamine gives every row the sheet's width; padded if not
                r.extend([""] * (width - len(r)))
        for j, values in enumerate(zip(*block)):
            texts = _texts(values, amount[j])
            for row, text in texts_at.get(j, ()):
                if at <= row < at + len(block):
                    texts[row - at] = text
            chunks[j].append(pa.array(texts, type=pa.string()))
        hidden_read += [r for r in sorted(hidden) if at <= r < at + len(block) and any(c != "" for c in block[r - at])]
        at += len(block)
    numbers = np.arange(first_row, at, dtype=np.int64)
    notices.extend(_hidden_notice(scan, hidden_read, first_col, width))
    table = pa.table([pa.chunked_array(c, type=pa.string()) for c in chunks], names=names) if width else pa.table({})
    return SheetColumns.of_table(table, rows=numbers, notices=notices)


def _header_index(p: Path, rows: list[list[object]], n_rows: int, options: SheetOptions) -> int:
    """The header's index in `rows` (the sheet's first rows): --header-row, or the first row naming the required
    columns."""
    if options.header_row is not None:
        if not 1 <= options.header_row <= n_rows:
            raise SheetError(f"{p}: --header-row {options.header_row} is outside the sheet (its rows are 1 to "
                             f"{n_rows})")
        return options.header_row - 1
    mapping = normalised_mapping(options.mapping)
    first = None
    for i, r in enumerate(rows):
        cells = [c for c in r if isinstance(c, str) and c.strip()]
        if not cells and not any(c != "" for c in r):
            continue
        first = i if first is None else first
        if names_required(cells, mapping):
            return i
    if first is None:
        raise SheetError(f"{p}: the sheet has no header row")
    found = [str(c) for c in rows[first] if c != ""]
    missing = sorted(set(REQUIRED_COLUMNS) - {column_of(c, mapping) for c in found}, key=REQUIRED_COLUMNS.index)
    raise SheetError(f"{p}: required column(s) {', '.join(missing)} missing (found: {', '.join(found)} on row "
                     f"{first + 1}); if the header is on another row, give its number with --header-row N")


def _header_names(header: list[object], first_col: int) -> list[str]:
    names: list[str] = []
    seen: dict[str, int] = {}
    for j, cell in enumerate(header):
        text = _cell_text(cell, False)
        name = text.strip() if text and text.strip() else f"__unnamed_{first_col + j - 1}"
        if name in seen:  # pandas' way with repeated names: "Notes", "Notes.1"
            seen[name] += 1
            name = f"{name}.{seen[name]}"
        seen.setdefault(name, 0)
        names.append(name)
    return names


def _texts(values: Sequence[object], amount: bool) -> list[str | None]:
    """A column's cell texts ("" stays "": ingest makes every empty text None). A column of text only is taken as
    it is; in others each distinct non-text value is converted once (amounts and dates repeat)."""
    if set(map(type, values)) <= {str}:
        return list(values)  # type: ignore[arg-type]
    memo: dict[tuple[type, object], str | None] = {}
    out: list[str | None] = []
    append = out.append
    for v in values:
        if type(v) is str:
            append(v)
            continue
        key = (type(v), v)  # 1, 1.0 and True are equal keys without their type
        text = memo.get(key, _UNSEEN)
        if text is _UNSEEN:
            text = memo[key] = _cell_text(v, amount)
        append(text)
    return out


_UNSEEN = "\x00unseen"


def _cell_text(v: object, amount: bool) -> str | None:
    """The text a spreadsheet shows for one cell's value (see the module's docstring)."""
    if isinstance(v, str):
        return v or None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v.is_integer():
            return str(int(v))
        if amount:
            cents = round(v * 100)
            if abs(v - cents / 100) <= 1e-9:
                sign, whole = ("-" if cents < 0 else ""), abs(cents)
                return f"{sign}{whole // 100}.{whole % 100:02d}"
        return repr(v)
    if isinstance(v, dt.datetime):
        return v.isoformat(sep=" ")
    if isinstance(v, (dt.date, dt.time)):
        return v.isoformat()
    if v is None:
        return None
    return str(v)


def _hidden_notice(scan: _Scan, rows: list[int], first_col: int, width: int) -> list[str]:
    """Hidden rows holding data and hidden columns of the table: read and paid like the others, so said."""
    last_col = first_col + width - 1
    cols = sorted({c for lo, hi in scan.hidden_cols for c in range(max(lo, first_col), min(hi, last_col) + 1)})
    parts = []
    if rows:
        parts.append(f"{len(rows)} hidden row{'s' if len(rows) > 1 else ''} ({_listed([str(r) for r in rows])})")
    if cols:
        parts.append(f"{len(cols)} hidden column{'s' if len(cols) > 1 else ''} "
                     f"({_listed([column_letters(c) for c in cols])})")
    if not parts:
        return []
    return [f"{' and '.join(parts)} {'was' if len(rows) + len(cols) == 1 else 'were'} read and "
            f"{'is' if len(rows) + len(cols) == 1 else 'are'} in the report"]


def _listed(items: list[str]) -> str:
    return ", ".join(items[:_LISTED]) + (f", ... ({len(items) - _LISTED} more)" if len(items) > _LISTED else "")
