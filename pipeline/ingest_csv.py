"""Read a CSV (or .txt) sheet into `SheetColumns`, the way finance really sends it: every cell as text, the header
read first so that no column is typed by guessing (pyarrow would turn "001" into 1).

- Encoding: `--encoding` if given; else a byte-order mark (UTF-8, UTF-16 LE/BE: Excel's "Unicode text"); else
  UTF-8 if the text is valid UTF-8; else cp1251 or cp1252 as charset-normalizer judges it, refused when both
  read plausibly. Anything but UTF-8 is transcoded to a temporary UTF-8 file (streamed) before pyarrow parses it.
- Delimiter: `--delimiter` if given, else sniffed from the header line (, ; tab |), refused when unclear.
- Row numbers as a spreadsheet shows them: the header is row 1 (or `--header-row N`, or the first row holding
  user_id and amount among the first 20 when row 1 does not), a blank line is a row of its own (LibreOffice
  shows it), a quoted cell spanning lines is one row. A sheet whose data lines are all one physical line each
  is numbered 2, 3, ... from a count of its newlines; otherwise record starts are found with numpy over the
  bytes (quote parity at each newline), never a Python loop per row.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from pipeline.contract import (
    SheetColumns,
    SheetLimits,
    SheetOptions,
    column_of,
    is_sheet_column,
    names_required,
    normalise_header,
    normalised_mapping,
)
from pipeline.errors import SheetError

# Columns that repeat their values by nature are dictionary-encoded as they are parsed: a title is then stored
# once per block, not once per row (1M finance rows: ~250 MB less), and not hashed again later.
_REPEATED = frozenset({"user_id", "amount", "public_title", "public_message", "without_message"})
_REPEATED_TYPE = pa.dictionary(pa.int32(), pa.string())

DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
_BOMS = ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))
# The single-byte encodings finance's Excel writes, with the language a person recognises them by.
DETECTED = {"cp1251": "Russian", "cp1252": "Western European"}
_CHUNK = 16 << 20  # bytes read at a time by every streamed pass
_HEAD = 1 << 20  # bytes looked at to find the header (grown for a longer header)
_FIND_HEADER_IN = 20  # rows searched for the header when row 1 is not one
_QUOTE, _LF, _CR = 34, 10, 13


def read_csv(p: Path, options: SheetOptions) -> SheetColumns:
    name = str(p)
    notices: list[str] = []
    encoding = _declared_or_marked(p, options.encoding)
    with open(p, "rb") as fh:
        head = fh.read(_HEAD)
    if encoding is None and b"\x00" in head:  # valid UTF-8, but no sheet's text holds NUL: UTF-16 without a BOM
        raise SheetError(f"{name}: the text looks like UTF-16 without a byte-order mark: pass --encoding utf-16-le "
                         "(or utf-16-be)")
    if b"\r" in head and b"\n" not in head:
        raise SheetError(f"{name}: its lines end in CR only (an old Mac export): save it again as CSV UTF-8")
    if encoding is None:  # nothing declared, no byte-order mark: UTF-8 if it is valid UTF-8
        if _is_utf8(head, whole=len(head) == p.stat().st_size):
            try:
                return _read_utf8(p, 0, options, notices, name, _Encoding("utf-8", 0, "assumed"))
            except _NotUtf8:
                notices.clear()  # invalid UTF-8 further down: detect on the whole file and read again
        encoding = _detect(p, name)
    if encoding.how != "assumed" and (encoding.codec != "utf-8" or "declared" in encoding.how):
        label = f"{encoding.codec} ({DETECTED[encoding.codec]})" if encoding.codec in DETECTED else encoding.codec
        hint = "" if "declared" in encoding.how else " (--encoding sets it)"
        notices.append(f"text encoding {label}, {encoding.how}{hint}")
    if encoding.codec == "utf-8":
        return _read_utf8(p, encoding.skip, options, notices, name, encoding)
    with tempfile.TemporaryDirectory(prefix="payout-csv-") as tmp:
        utf8 = Path(tmp) / "sheet.utf8.csv"
        _transcode(p, encoding, utf8, name)
        return _read_utf8(utf8, 0, options, notices, name, encoding)


# --- encoding ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Encoding:
    codec: str  # Python codec name; "utf-8" is read as is
    skip: int  # bytes of a byte-order mark to skip
    how: str  # "declared", "from its byte-order mark", "detected", "assumed" (valid UTF-8)


class _NotUtf8(Exception):
    """Raised inside the UTF-8 read when the text turns out not to be UTF-8 (and nothing declared it)."""


def _declared_or_marked(p: Path, declared: str | None) -> _Encoding | None:
    with open(p, "rb") as fh:
        head = fh.read(4)
    marked = next(((codec, len(bom)) for bom, codec in _BOMS if head.startswith(bom)), None)
    if declared is None:
        return None if marked is None else _Encoding(marked[0], marked[1], "from its byte-order mark")
    try:
        codec = codecs.lookup(declared).name
    except LookupError:
        raise SheetError(f"{p}: unknown encoding {declared!r} (e.g. utf-8, utf-16, cp1251, cp1252)") from None
    if codec == "utf-8-sig":
        codec = "utf-8"
    if codec == "utf-16":  # the byte-order mark says which; Excel writes one, without it little-endian
        codec = marked[0] if marked and marked[0].startswith("utf-16") else "utf-16-le"
    if marked and marked[0] != codec:  # a config's default encoding, and a file saved with a BOM: the BOM is sure
        return _Encoding(marked[0], marked[1], f"from its byte-order mark, not the declared {codec}")
    return _Encoding(codec, marked[1] if marked else 0, "declared")


def _is_utf8(head: bytes, whole: bool) -> bool:
    """Whether the file's first bytes are UTF-8 (a character cut at the end of a partial head is fine)."""
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=whole)
    except UnicodeDecodeError:
        return False
    return True


def _detect(p: Path, name: str) -> _Encoding:
    """cp1251 or cp1252, judged on the lines that hold non-ASCII bytes: by how their words read in each (short
    comments fool charset-normalizer: it took "5 €" for cp1251 "5 Ђ"), else by charset-normalizer on enough text;
    refused when both read as plausible text that differs."""
    from charset_normalizer import from_bytes  # imported only for a sheet that is not UTF-8

    sample = _non_ascii_lines(p)
    texts = {}
    for codec in DETECTED:
        try:
            texts[codec] = sample.decode(codec)
        except UnicodeDecodeError:
            pass
    if not texts:
        raise SheetError(f"{name}: the text is not UTF-8, cp1251 or cp1252: pass its encoding with --encoding NAME")
    if len(texts) == 1 or len(set(texts.values())) == 1:
        return _Encoding(next(iter(texts)), 0, "detected")
    words = {codec: _natural_words(text, codec) for codec, text in texts.items()}
    ranked = sorted(texts, key=lambda c: -words[c])
    if words[ranked[0]] != words[ranked[1]]:  # words with letters beyond ASCII decide
        return _Encoding(ranked[0], 0, "detected")
    # no such words (symbols like № or €): charset-normalizer's judgement, trusted only on enough text
    judged = {m.encoding: m for m in from_bytes(sample, cp_isolation=list(texts))}
    if sum(b >= 0x80 for b in sample) >= 16 and judged:
        order = sorted(judged.values(), key=lambda m: (m.chaos, -m.coherence))
        if len(order) == 1 or (order[1].chaos - order[0].chaos >= 0.05
                               or order[0].coherence - order[1].coherence >= 0.2):
            return _Encoding(order[0].encoding, 0, "detected")
    a, b = sorted(texts)[:2]
    raise SheetError(f"{name}: the text encoding is unclear ({a} or {b}?): pass --encoding {a} "
                     f"({DETECTED.get(a, a)}) or --encoding {b} ({DETECTED.get(b, b)})")


_CYRILLIC = frozenset("ЁЄІЇЎёєіїўҐґ") | frozenset(chr(c) for c in range(0x410, 0x450))  # Russian, Ukrainian, Belarusian


def _natural_words(text: str, codec: str) -> int:
    """Words with letters beyond ASCII that read naturally in `codec` minus those that do not: in cp1251 a word
    is all Russian/Ukrainian letters (Latin mixed in, like "qualitй", or "Ђ" for €, is a misreading); in cp1252
    an accented letter sits among ASCII letters (3+ accented letters alone, like "Èòîã", is Russian misread)."""
    score = 0
    for word in re.findall(r"\w+", text):
        if word.isascii() or not word.isalpha():
            continue
        ascii_letters = sum(c.isascii() for c in word)
        if codec == "cp1251":
            natural = ascii_letters == 0 and all(c in _CYRILLIC for c in word)
        else:
            natural = ascii_letters > 0 or len(word) <= 2
        score += 1 if natural else -1
    return score


def _non_ascii_lines(p: Path, enough: int = 64 << 10) -> bytes:
    """Up to `enough` bytes of the file's lines that hold non-ASCII bytes (what tells encodings apart)."""
    parts: list[bytes] = []
    size = 0
    with open(p, "rb") as fh:
        while size < enough and (chunk := fh.read(_CHUNK)):
            high = np.flatnonzero(np.frombuffer(chunk, np.uint8) >= 0x80)
            at = 0
            while at < len(high) and size < enough:
                pos = int(high[at])
                start, end = chunk.rfind(b"\n", 0, pos) + 1, chunk.find(b"\n", pos)
                end = len(chunk) if end < 0 else end
                parts.append(chunk[start:end])
                size += end - start
                at = int(np.searchsorted(high, end))
    return b"\n".join(parts)


def _transcode(p: Path, encoding: _Encoding, dest: Path, name: str) -> None:
    """The sheet re-encoded as UTF-8 into `dest`, a chunk at a time (memory stays bounded)."""
    decoder = codecs.getincrementaldecoder(encoding.codec)("strict")
    lines = 0
    with open(p, "rb") as src, open(dest, "wb") as out:
        src.seek(encoding.skip)
        while True:
            chunk = src.read(_CHUNK)
            try:
                text = decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                line = lines + chunk[: exc.start].decode(encoding.codec, "replace").count("\n") + 1
                bad = chunk[exc.start: exc.end].hex(" ")
                raise SheetError(f"{name}: bytes {bad} on line {line} are not {encoding.codec} text "
                                 f"({encoding.how}): pass the sheet's encoding with --encoding NAME") from None
            lines += text.count("\n")
            out.write(text.encode("utf-8"))
            if not chunk:
                return


# --- reading the UTF-8 text -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Header:
    names: list[str]
    delimiter: str
    row: int  # the header's row number as the spreadsheet shows it
    data_start: int  # byte offset of the first data line


def _read_utf8(path: Path, offset: int, options: SheetOptions, notices: list[str], name: str,
               encoding: _Encoding) -> SheetColumns:
    header = _header(path, offset, options, notices, name, encoding)
    limits = options.limits
    if len(header.names) > limits.max_columns:
        raise SheetError(f"{name}: the header has {len(header.names):,} columns, over the limit of "
                         f"{limits.max_columns:,} (raise it with --max-columns if the sheet is genuine)")
    size = path.stat().st_size
    lines = _physical_lines(path, header.data_start)
    rows: np.ndarray | None = None
    longest = 0
    if lines > limits.max_rows:  # an upper bound (multi-line cells, blank lines): count exactly
        rows, longest = _scan(path, header.data_start, header.row + 1, limits, name)
    try:
        table = _parse(path, header, size, longest, limits, name, encoding)
    except _Ragged:
        table, rows = _read_padded(path, header, limits, name, notices)
        return SheetColumns.of_table(table, rows, notices)
    if rows is None and table.num_rows == lines:  # no blank line, no multi-line cell
        rows = np.arange(header.row + 1, header.row + 1 + lines, dtype=np.int64)
    if rows is None or len(rows) != table.num_rows:
        rows, _ = _scan(path, header.data_start, header.row + 1, limits, name)
    if len(rows) != table.num_rows:  # stray quotes or CR-only line ends: ask Python's csv module
        rows = _rows_by_csv_module(path, header)
    if len(rows) != table.num_rows:
        raise SheetError(f"{name}: cannot tell which spreadsheet row each record is ({table.num_rows:,} records, "
                         f"{len(rows):,} rows): check its quotes")
    return SheetColumns.of_table(table, rows, notices)


def _header(path: Path, offset: int, options: SheetOptions, notices: list[str], name: str,
            encoding: _Encoding) -> _Header:
    """The header row (declared, row 1, or found below title rows), its delimiter and where the data starts."""
    if options.header_row is not None and options.header_row < 1:
        raise SheetError(f"{name}: --header-row must be 1 or more, got {options.header_row}")
    lines = _first_lines(path, offset, options.header_row or 1, _FIND_HEADER_IN, name, encoding)
    if not lines:
        raise SheetError(f"{name}: file is empty")
    mapping = normalised_mapping(options.mapping)
    if options.header_row is not None:
        if len(lines) < options.header_row:
            raise SheetError(f"{name}: --header-row {options.header_row} is past the sheet's last row ({len(lines)})")
        at = options.header_row
    else:
        at = _find_header(lines, mapping) or 1
        if at != 1:
            notices.append(f"the header is row {at}; the {at - 1} row(s) above it are skipped (--header-row sets it)")
    text, end = lines[at - 1]
    text = text.rstrip("\r")
    if not text.strip(",;\t| \"'"):
        raise SheetError(f"{name}: row {at} is not a header (it is empty): pass --header-row N, the header's row")
    following = [t for t, _ in lines[at:at + _FIND_HEADER_IN] if t.strip()]
    delimiter = options.delimiter or _sniff(text, following, mapping, name, at)
    if delimiter != ",":
        how = "declared" if options.delimiter else "sniffed from the header"
        notices.append(f"delimiter {DELIMITERS.get(delimiter, repr(delimiter))}, {how} (--delimiter sets it)")
    header = _split(text, delimiter)
    names = [h if h.strip() else f"__unnamed_{i}" for i, h in enumerate(header)]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise SheetError(f"{name}: repeated column name(s) {', '.join(map(repr, dup))}")
    return _Header(names, delimiter, at, offset + end)


def _first_lines(path: Path, offset: int, needed: int, more: int, name: str, encoding: _Encoding
                 ) -> list[tuple[str, int]]:
    """The first `needed` logical lines (a quoted cell may span physical lines) and up to `more` after them, as
    text, each with the byte offset (from `offset`) just past its line end. The lines after the header only help
    to sniff the delimiter and find a header below title rows, so a huge cell among them stops the reading."""
    size = path.stat().st_size - offset
    count = needed + more
    want = _HEAD
    while True:
        with open(path, "rb") as fh:
            fh.seek(offset)
            head = fh.read(want)
        ends, _ = _terminators(np.frombuffer(head, np.uint8), 0)
        whole = len(head) >= size
        if len(ends) >= count or whole or (len(ends) >= needed and want >= 8 * _HEAD):
            break
        if want >= 64 * _HEAD:
            raise SheetError(f"{name}: no line end in the first {want >> 20} MB: is this a CSV file?")
        want *= 8
    bounds = [int(e) + 1 for e in ends[:count]]
    if len(bounds) < count and whole and len(head) > (bounds[-1] if bounds else 0):
        bounds.append(len(head))  # the last line has no line end
    lines, start = [], 0
    for end in bounds:
        raw = head[start:end].rstrip(b"\n")
        try:
            lines.append((raw.decode("utf-8"), end))
        except UnicodeDecodeError:
            if encoding.how == "assumed":
                raise _NotUtf8 from None
            raise SheetError(f"{name}: line {len(lines) + 1} is not {encoding.codec} text ({encoding.how}): pass "
                             "the sheet's encoding with --encoding NAME, e.g. cp1251") from None
        start = end
    return lines


def _find_header(lines: list[tuple[str, int]], mapping: Mapping[str, str]) -> int | None:
    """The first row holding both required columns, if row 1 does not (title rows above the header)."""
    for i, (text, _) in enumerate(lines, start=1):
        for d in DELIMITERS:
            if names_required(_split(text.rstrip("\r"), d), mapping):
                return None if i == 1 else i
    return None


def _sniff(text: str, following: list[str], mapping: Mapping[str, str], name: str, row: int) -> str:
    """The delimiter of the header line: the only candidate outside quotes, else the one that yields known
    column names, else the one that splits the next rows into as many cells as the header."""
    candidates = [d for d in DELIMITERS if _count_outside_quotes(text, d)]
    if len(candidates) <= 1:
        return candidates[0] if candidates else ","

    def score(d: str) -> tuple[int, bool]:
        fields = _split(text, d)
        known = sum(1 for f in fields if is_sheet_column(column_of(f, mapping)))
        return known, all(len(_split(line, d)) == len(fields) for line in following)

    scores = {d: score(d) for d in candidates}
    best = max(scores.values())
    winners = [d for d in candidates if scores[d] == best]
    if len(winners) == 1:
        return winners[0]
    shown = " or ".join(f"{DELIMITERS[d]} ({d!r})" for d in winners)
    flags = " or ".join("--delimiter " + ("tab" if d == "\t" else f"'{d}'") for d in winners)
    raise SheetError(f"{name}: the delimiter of the header (row {row}) is unclear, {shown}: pass {flags}")


def _count_outside_quotes(text: str, char: str) -> int:
    return sum(part.count(char) for part in text.split('"')[::2])


def _split(text: str, delimiter: str) -> list[str]:
    try:
        return next(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter), [])
    except csv.Error:
        return [text]


# --- counting rows ------------------------------------------------------------------------------------------


def _terminators(arr: np.ndarray, parity: int) -> tuple[np.ndarray, int]:
    """Positions of the newlines that end a record in `arr` (an even number of quotes before them, counting the
    quote parity carried in from the bytes before `arr`), and the parity after `arr`.

    Quotes are summed per line (`reduceat`, mod 256: only the parity matters) and the per-line sums accumulated,
    rather than locating every quote: a finance sheet has ~20 quotes a row (JSON texts), 20 newlines a line less.
    """
    quotes = (arr == _QUOTE).view(np.uint8)
    newlines = np.flatnonzero(arr == _LF)
    after = (parity + int(np.count_nonzero(quotes))) & 1
    if len(newlines) == 0:
        return newlines, after
    starts = np.empty(len(newlines), np.intp)
    starts[0], starts[1:] = 0, newlines[:-1] + 1
    per_line = np.add.reduceat(quotes[: newlines[-1] + 1], starts, dtype=np.uint8)
    odd = (np.cumsum(per_line, dtype=np.uint8) + parity) & 1
    return newlines[odd == 0], after


def _physical_lines(path: Path, start: int) -> int:
    """Lines from `start` to the end (a last line without a line end counts)."""
    count, last = 0, b"\n"
    with open(path, "rb") as fh:
        fh.seek(start)
        while chunk := fh.read(_CHUNK):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


def _scan(path: Path, start: int, first_row: int, limits: SheetLimits, name: str, chunk_size: int = _CHUNK
          ) -> tuple[np.ndarray, int]:
    """(the spreadsheet row number of every non-blank record from `start`, the longest record in bytes), with
    numpy per 16 MB chunk; refuses as soon as the records pass the row limit."""
    found: list[np.ndarray] = []
    count, parity, row, longest = 0, 0, first_row, 0
    line_start, last_byte, base = start, _LF, start
    with open(path, "rb") as fh:
        fh.seek(start)
        while chunk := fh.read(chunk_size):
            arr = np.frombuffer(chunk, np.uint8)
            ends, parity = _terminators(arr, parity)
            if len(ends):
                starts = np.concatenate(([line_start - base], ends[:-1] + 1))
                lengths = ends - starts
                before = arr[np.maximum(ends - 1, 0)]
                before[ends == 0] = last_byte
                blank = (lengths == 0) | ((lengths == 1) & (before == _CR))
                found.append(row + np.flatnonzero(~blank))
                count += len(found[-1])
                longest = max(longest, int(lengths.max()))
                row += len(ends)
                line_start = base + int(ends[-1]) + 1
                if count > limits.max_rows:
                    _too_many_rows(name, limits)
            last_byte, base = int(arr[-1]), base + len(arr)
    tail = base - line_start
    if tail > 1 or (tail == 1 and last_byte != _CR):  # a last line without a line end
        found.append(np.array([row]))
        count += 1
        longest = max(longest, tail)
        if count > limits.max_rows:
            _too_many_rows(name, limits)
    rows = np.concatenate(found).astype(np.int64) if found else np.empty(0, np.int64)
    return rows, longest


def _too_many_rows(name: str, limits: SheetLimits) -> None:
    raise SheetError(f"{name}: the sheet has more than {limits.max_rows:,} rows, the limit (raise it with "
                     "--max-rows if the sheet is genuine)")


def _rows_by_csv_module(path: Path, header: _Header) -> np.ndarray:
    """Row numbers as Python's csv module sees the records (one per logical line; a blank line is []): slow, only
    for files the quote-parity scan misreads (a stray quote inside an unquoted cell, CR-only line ends)."""
    rows = []
    with open(path, "rb") as raw:
        raw.seek(header.data_start)
        text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        for i, record in enumerate(csv.reader(text, delimiter=header.delimiter), start=header.row + 1):
            if record:
                rows.append(i)
    return np.array(rows, dtype=np.int64)


# --- parsing ----------------------------------------------------------------------------------------------


def _parse(path: Path, header: _Header, size: int, longest: int, limits: SheetLimits, name: str,
           encoding: _Encoding) -> pa.Table:
    """The data records as a table of text columns. The block must hold the longest record: with pyarrow's
    1 MB default, one 10 MB cell fails the whole sheet ("straddling object"), so a bigger block is taken when the
    scan measured one, or after that failure."""
    types = {n: _REPEATED_TYPE if normalise_header(n) in _REPEATED else pa.string() for n in header.names}
    if header.data_start >= size:
        return pa.table({n: pa.array([], t) for n, t in types.items()})
    block = _block_size(longest)
    while True:
        try:
            with pa.OSFile(str(path)) as fh:
                fh.seek(header.data_start)
                return pacsv.read_csv(
                    fh,
                    read_options=pacsv.ReadOptions(column_names=header.names, block_size=block, use_threads=True),
                    parse_options=pacsv.ParseOptions(delimiter=header.delimiter, newlines_in_values=True),
                    convert_options=pacsv.ConvertOptions(
                        column_types=types, strings_can_be_null=False, quoted_strings_can_be_null=False),
                )
        except pa.ArrowInvalid as exc:
            text = str(exc)
            if "straddling" in text and not longest:
                _, longest = _scan(path, header.data_start, header.row + 1, limits, name)
                block = _block_size(longest)
                continue
            if "Expected" in text and "columns, got" in text:
                raise _Ragged from None
            if "invalid UTF8" in text or "invalid utf8" in text.lower():
                if encoding.how == "assumed":
                    raise _NotUtf8 from None
                raise SheetError(f"{name}: the text is not valid {encoding.codec} ({encoding.how}): pass the "
                                 "sheet's encoding with --encoding NAME, e.g. cp1251") from None
            raise


class _Ragged(Exception):
    """pyarrow met a record with more or fewer cells than the header."""


def _read_padded(path: Path, header: _Header, limits: SheetLimits, name: str, notices: list[str]
                 ) -> tuple[pa.Table, np.ndarray]:
    """The records through Python's csv module, short ones padded with empty cells (some Excel versions leave out a
    row's trailing empty cells); a record with more cells than the header is refused by its row number. Slower
    than pyarrow, so only after pyarrow refused; built 100k records at a time."""
    width = len(header.names)
    columns: list[list[pa.Array]] = [[] for _ in range(width)]
    rows: list[int] = []
    short: list[int] = []
    batch: list[list[str]] = []

    def flush() -> None:
        for i in range(width):
            columns[i].append(pa.array([r[i] for r in batch], pa.string()))
        batch.clear()

    with open(path, "rb") as raw:
        raw.seek(header.data_start)
        text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        for row, record in enumerate(csv.reader(text, delimiter=header.delimiter), start=header.row + 1):
            if not record:
                continue
            if len(record) > width:
                raise SheetError(f"{name}: cannot read CSV sheet: row {row} has {len(record)} cells but the header "
                                 f"(row {header.row}) has {width}: fix that row, or check the delimiter "
                                 f"({DELIMITERS.get(header.delimiter, header.delimiter)}; --delimiter sets it)")
            if len(record) < width:
                short.append(row)
                record += [""] * (width - len(record))
            rows.append(row)
            if len(rows) > limits.max_rows:
                _too_many_rows(name, limits)
            batch.append(record)
            if len(batch) >= 100_000:
                flush()
    flush()
    shown = ", ".join(map(str, short[:5])) + (f" and {len(short) - 5:,} more" if len(short) > 5 else "")
    notices.append(f"row(s) {shown} have fewer cells than the header: the missing cells are read as empty")
    table = pa.table({n: pa.chunked_array(c, pa.string()) for n, c in zip(header.names, columns)})
    return table, np.array(rows, dtype=np.int64)


def _block_size(longest: int) -> int:
    """pyarrow's block: its 1 MB default, or a power of two over twice the longest record."""
    block = 1 << 20
    while block < 2 * longest + 4096:
        block *= 2
    return block
