"""Check every row of the canonical sheet frame and report every problem of every row, in plain words.

One pandera schema, validated lazily, so a row with three problems shows all three. Each check is
vectorised: texts are parsed once per *distinct* value (sheets repeat amounts and titles), amounts
with integer arithmetic on their digits, never floats. pandera's `failure_cases` become our error frame
(`source_file`, `source_row`, `column`, `code`, `message`); codes are `ErrorCode`, messages are for people.

Documented limits (all configurable through `ValidationRules`):
- amount: read by `money.read_amount` (the forms finance writes: "12.50", "$12.50", "12.50 USD", "1,234.50";
  with `decimal_comma` "12,50", "1 234,50", "1.234,50"), at most `max_decimals` decimals (trailing zeros do
  not count: "1.500" is $1.50), between `min_cents` and `max_cents` ($0.01 to $100 by default; Toloka itself
  accepts $0.005 to $100 but we pay whole cents). Another currency, an uncalculated formula ("=SUM(...)"), a
  decimal mark the locale does not use, and an amount beyond `money.MAX_WHOLE_DIGITS` digits are each a row
  error with the text as written; only amounts read exactly get `amount_cents`.
- user_id: 32 lowercase hex characters, like Toloka's `a1b0b42923c429daa2c764d7ccfc364d`.
- public_title / public_message: a JSON object of language code -> non-empty text, codes from
  `languages`; titles up to 200 characters, messages up to 2,000 per language (Toloka documents none).
- private_comment up to 1,000 characters; bonus_key up to 200 characters and unique in the batch.
- without_message: true/false/1/0/yes/no (any case), empty means false. true -> no title and no
  message; false -> both, each with at least one language.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pandera.pandas as pa
import pyarrow
import pyarrow.compute as pc
from pandera.errors import SchemaErrors

from pipeline.contract import TEXT_COLUMNS, codes_column, factorize_text, release_memory
from pipeline.money import PLAIN_AMOUNT, AmountProblem, format_usd, read_amount

ERROR_COLUMNS = ["source_file", "source_row", "column", "code", "message"]

_TRUE = frozenset({"true", "1", "yes", "y"})
_FALSE = frozenset({"false", "0", "no", "n"})
_USER_ID = r"^[0-9a-f]{32}$"
_LANG = re.compile(r"^[A-Z]{2}$")
_PLAIN_AMOUNT = re.compile(r"-?[0-9]*\.?[0-9]*")
_PLAIN = f"^{PLAIN_AMOUNT}$"


class ErrorCode(StrEnum):
    """Why a row is invalid. Reports, exit codes and tests depend on these; people read the messages."""

    REQUIRED = "required"
    USER_ID_FORMAT = "user_id_format"
    AMOUNT_FORMULA = "formula_not_calculated"
    AMOUNT_CURRENCY = "amount_currency"
    AMOUNT_DECIMAL_COMMA = "amount_decimal_comma"
    AMOUNT_DECIMAL_POINT = "amount_decimal_point"
    AMOUNT_AMBIGUOUS = "amount_ambiguous"
    AMOUNT_NOT_A_NUMBER = "amount_not_a_number"
    AMOUNT_TOO_MANY_DECIMALS = "amount_too_many_decimals"
    AMOUNT_TOO_SMALL = "amount_too_small"
    AMOUNT_TOO_LARGE = "amount_too_large"
    NOT_A_BOOLEAN = "not_a_boolean"
    NOT_A_TEXT_OBJECT = "not_a_text_object"
    LANGUAGE_NOT_ALLOWED = "language_not_allowed"
    TEXT_TOO_LONG = "text_too_long"
    TEXT_REQUIRED = "text_required"
    TEXT_NOT_ALLOWED = "text_not_allowed"
    BONUS_KEY_REPEATED = "bonus_key_repeated"
    OTHER = "other"


DEFAULT_LANGUAGES = frozenset(
    {"EN", "RU", "TR", "ID", "FR", "DE", "ES", "PT", "IT", "KK", "UK", "AR", "JA", "ZH", "HI", "PL", "VI", "KO"}
)


@dataclass(frozen=True)
class ValidationRules:
    """Limits a row must respect; defaults are our finance policy, not Toloka's wider limits."""

    min_cents: int = 1
    max_cents: int = 10_000
    max_decimals: int = 2
    languages: frozenset[str] = field(default=DEFAULT_LANGUAGES)
    max_title_len: int = 200
    max_message_len: int = 2_000
    max_comment_len: int = 1_000
    max_bonus_key_len: int = 200
    max_cell_chars: int = 32_767  # any other cell payout reads (assignment_id; the rest have their own limits)
    decimal_comma: bool = False  # amounts written 12,50 / 1 234,50 / 1.234,50 (money.read_amount)

    def __post_init__(self) -> None:
        if not 0 <= self.max_decimals <= 2:
            raise ValueError("max_decimals must be 0, 1 or 2: amounts are paid in whole cents")
        if not 0 < self.min_cents <= self.max_cents:
            raise ValueError("need 0 < min_cents <= max_cents")


# --- parsing, once per distinct text ----------------------------------------------------------------


def _distinct(s: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(codes, uniques): codes[i] indexes uniques, -1 for a missing cell."""
    return factorize_text(s.to_numpy(dtype=object))


def _spread(codes: np.ndarray, values: np.ndarray, missing: Any) -> np.ndarray:
    out = np.append(values, np.array([missing], dtype=values.dtype))
    return out[codes]  # code -1 picks the appended "missing" value


# a distinct amount text's problem, as a small integer per row (0: it reads as a number)
_PROBLEMS = (None, *AmountProblem)
_KIND = {p: i for i, p in enumerate(_PROBLEMS)}


@dataclass
class _Amounts:
    kind: np.ndarray  # int8 per row: _KIND of its problem, 0 when it reads as a number (and when missing)
    negative: np.ndarray  # bool: the sign written (a beyond-cap amount is too small or too large by it)
    decimals_ok: np.ndarray  # bool: False only for a number with more significant decimals than allowed
    cents: np.ndarray  # int64; valid where has_cents
    has_cents: np.ndarray

    def problem(self, problem: AmountProblem) -> np.ndarray:
        return self.kind == _KIND[problem]


def _parse_amounts(distinct: tuple[np.ndarray, np.ndarray], rules: ValidationRules) -> _Amounts:
    """Each distinct amount text read once, spread to its rows: the usual "12.50" / "$12.5" (`money.PLAIN_AMOUNT`)
    in Arrow, all at once; any other text by `money.read_amount` (exact digits, bounded)."""
    codes, uniques = distinct
    arr = pyarrow.array(uniques, type=pyarrow.string())
    # with a decimal comma, "12,50" is as plain; so is "12.50" (2 digits after a dot never make a thousands group)
    pattern = _PLAIN.replace(r"\.", "[.,]") if rules.decimal_comma else _PLAIN
    plain = pc.fill_null(pc.match_substring_regex(arr, pattern), False).to_numpy(zero_copy_only=False).astype(bool)
    parts = pc.extract_regex(pc.if_else(plain, arr, pyarrow.scalar("0")), pattern)
    whole = pc.cast(pc.struct_field(parts, "i"), pyarrow.int64())  # at most 10 digits: no overflow
    fraction = pc.fill_null(pc.struct_field(parts, "f"), "")
    cents = pc.add(pc.multiply(whole, 100), pc.cast(pc.utf8_rpad(fraction, 2, "0"), pyarrow.int64()))
    cents = cents.to_numpy(zero_copy_only=False).astype(np.int64)
    n = len(uniques)
    kind = np.zeros(n, dtype=np.int8)
    negative = np.zeros(n, dtype=bool)
    # decimals beyond the allowed ones must all be zero ("1.50" with max_decimals=1 is $1.5)
    decimals_ok = pc.match_substring_regex(fraction, rf"^[0-9]{{0,{rules.max_decimals}}}0*$").to_numpy(
        zero_copy_only=False).astype(bool)
    has_cents = plain & decimals_ok
    other = np.flatnonzero(~plain)
    if len(other):
        comma, max_decimals = rules.decimal_comma, rules.max_decimals
        read = [read_amount(t, decimal_comma=comma) for t in uniques[other].tolist()]
        kind[other] = [_KIND[a.problem] for a in read]
        negative[other] = [a.negative for a in read]
        decimals_ok[other] = [a.problem is not None or a.decimals <= max_decimals for a in read]
        readable = np.array([a.problem is None and a.decimals <= max_decimals for a in read], dtype=bool)
        has_cents[other] = readable
        cents[other[readable]] = [a.cents() for a, ok in zip(read, readable) if ok]
    return _Amounts(
        kind=_spread(codes, kind, 0),
        negative=_spread(codes, negative, False),
        decimals_ok=_spread(codes, decimals_ok, True),
        cents=_spread(codes, cents, 0),
        has_cents=_spread(codes, has_cents, False),
    )


@dataclass(frozen=True)
class _TextObject:
    canonical: str | None  # canonical JSON text, None if not a valid text object
    problem: str | None  # why it is not a text object
    bad_languages: tuple[str, ...]
    longest: int
    n_languages: int


def _parse_text_object(text: str) -> _TextObject:
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError:
        return _TextObject(None, "is not valid JSON (expected something like {\"EN\": \"Great work\"})", (), 0, 0)
    if not isinstance(obj, dict):
        return _TextObject(None, "must be a JSON object of language -> text, like {\"EN\": \"Great work\"}", (), 0, 0)
    for k, v in obj.items():
        if not isinstance(v, str):
            return _TextObject(None, f"has a non-text value for {k!r}", (), 0, 0)
        if not v.strip():
            return _TextObject(None, f"has an empty text for {k!r}", (), 0, 0)
    canonical = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS).decode()
    longest = max((len(v) for v in obj.values()), default=0)
    return _TextObject(canonical, None, tuple(k for k in obj if not _LANG.match(k)), longest, len(obj))


@dataclass
class _Context:
    """Everything parsed once per validation run; checks read from here."""

    rules: ValidationRules
    frame: pd.DataFrame
    cache: dict[str, Any] = field(default_factory=dict)

    def amounts(self) -> _Amounts:
        if "amount" not in self.cache:
            self.cache["amount"] = _parse_amounts(self.codes("amount"), self.rules)
        return self.cache["amount"]

    def text_objects(self, column: str) -> tuple[np.ndarray, np.ndarray]:
        """(codes, parsed uniques) for a title/message column."""
        if column not in self.cache:
            codes, uniques = self.codes(column)
            self.cache[column] = (codes, np.array([_parse_text_object(t) for t in uniques] + [None], dtype=object))
        return self.cache[column]

    def text_attr(self, column: str, fn: Callable[[_TextObject], Any], missing: Any, dtype: Any) -> np.ndarray:
        codes, parsed = self.text_objects(column)
        values = np.array([fn(p) for p in parsed[:-1]] + [missing], dtype=dtype)
        return values[codes]

    def without_message(self) -> tuple[np.ndarray, np.ndarray]:
        """(flag, is_boolean_text) per row; empty -> (False, True)."""
        if "wm" not in self.cache:
            codes, uniques = self.codes("without_message")
            lowered = [str(u).strip().lower() for u in uniques]
            flag = np.array([t in _TRUE for t in lowered] + [False], dtype=bool)
            ok = np.array([t in _TRUE or t in _FALSE for t in lowered] + [True], dtype=bool)
            self.cache["wm"] = (flag[codes], ok[codes])
        return self.cache["wm"]

    def codes(self, column: str) -> tuple[np.ndarray, np.ndarray]:
        """(codes, uniques) of a column, factorised once per validation run."""
        key = f"codes:{column}"
        if key not in self.cache:
            self.cache[key] = _distinct(self.frame[column])
        return self.cache[key]

    def lengths(self, column: str) -> np.ndarray:
        """Characters per cell (missing -> 0), measured cell by cell in C (`map(len)`): comments are distinct
        per row, so factorising them first, as for the repeated columns, would cost several times more."""
        values = self.frame[column].to_numpy(dtype=object)
        present = pd.notna(values)
        out = np.zeros(len(values), dtype=np.int64)
        out[present] = np.fromiter(map(len, values[present]), dtype=np.int64, count=int(present.sum()))
        return out


# --- the schema ---------------------------------------------------------------------------------


def _check(code: ErrorCode, fn: Callable[[pd.Series], Any]) -> pa.Check:
    def run(s: pd.Series) -> pd.Series:
        return pd.Series(np.asarray(fn(s), dtype=bool), index=s.index)

    return pa.Check(run, name=code.value, error=code.value, ignore_na=False)


def _schema(ctx: _Context) -> pa.DataFrameSchema:
    r = ctx.rules

    def user_id_ok(s: pd.Series) -> np.ndarray:
        codes, uniques = ctx.codes("user_id")
        ok = pc.match_substring_regex(pyarrow.array(uniques, type=pyarrow.string()), _USER_ID)
        return _spread(codes, ok.to_numpy(zero_copy_only=False).astype(bool), True)

    def amount_range(low: bool) -> Callable[[pd.Series], np.ndarray]:
        def ok(s: pd.Series) -> np.ndarray:
            a = ctx.amounts()
            bad = a.cents < r.min_cents if low else a.cents > r.max_cents
            beyond = a.problem(AmountProblem.BEYOND_CAP) & (a.negative if low else ~a.negative)
            return ~(a.has_cents & bad) & ~beyond

        return ok

    def amount_is_not(problem: AmountProblem) -> Callable[[pd.Series], np.ndarray]:
        return lambda s: ~ctx.amounts().problem(problem)

    def text_checks(column: str, max_len: int) -> list[pa.Check]:
        wm, wm_ok = ctx.without_message()
        has_text = lambda: ctx.text_attr(column, lambda p: p.n_languages > 0, False, bool)  # noqa: E731
        present = lambda: ctx.text_objects(column)[0] >= 0  # noqa: E731 - notna from the cached codes, no isna pass
        return [
            _check(ErrorCode.NOT_A_TEXT_OBJECT, lambda s: ctx.text_attr(column, lambda p: p.problem is None, True, bool)),
            _check(ErrorCode.LANGUAGE_NOT_ALLOWED, lambda s: ctx.text_attr(
                column, lambda p: all(k in r.languages for k in _languages(p)), True, bool)),
            _check(ErrorCode.TEXT_TOO_LONG, lambda s: ctx.text_attr(column, lambda p: p.longest <= max_len, True, bool)),
            # the without_message rule: judged only where without_message itself is readable and the
            # cell is not already reported as broken JSON
            _check(ErrorCode.TEXT_NOT_ALLOWED, lambda s: ~(wm & wm_ok & present())),
            _check(ErrorCode.TEXT_REQUIRED, lambda s: wm | ~wm_ok | has_text()
                   | (present() & ~ctx.text_attr(column, lambda p: p.problem is None, True, bool))),
        ]

    def bonus_key_first(s: pd.Series) -> np.ndarray:
        """False for a filled bonus key seen on an earlier row (by value, via the codes of its texts)."""
        codes, _ = ctx.codes("bonus_key")
        filled = codes >= 0
        if not filled.any():  # the usual sheet: no bonus_key column at all
            return np.ones(len(codes), dtype=bool)
        return ~(filled & pd.Series(codes).duplicated(keep="first").to_numpy())

    def length_ok(column: str, max_len: int) -> Callable[[pd.Series], np.ndarray]:
        return lambda s: ctx.lengths(column) <= max_len

    columns = {
        "user_id": pa.Column(nullable=False, checks=[_check(ErrorCode.USER_ID_FORMAT, user_id_ok)]),
        "amount": pa.Column(
            nullable=False,
            checks=[
                _check(ErrorCode.AMOUNT_FORMULA, amount_is_not(AmountProblem.FORMULA)),
                _check(ErrorCode.AMOUNT_CURRENCY, amount_is_not(AmountProblem.CURRENCY)),
                _check(ErrorCode.AMOUNT_DECIMAL_COMMA, amount_is_not(AmountProblem.DECIMAL_COMMA)),
                _check(ErrorCode.AMOUNT_DECIMAL_POINT, amount_is_not(AmountProblem.DECIMAL_POINT)),
                _check(ErrorCode.AMOUNT_AMBIGUOUS, amount_is_not(AmountProblem.AMBIGUOUS)),
                _check(ErrorCode.AMOUNT_NOT_A_NUMBER, amount_is_not(AmountProblem.NOT_A_NUMBER)),
                _check(ErrorCode.AMOUNT_TOO_MANY_DECIMALS, lambda s: ctx.amounts().decimals_ok),
                _check(ErrorCode.AMOUNT_TOO_SMALL, amount_range(low=True)),
                _check(ErrorCode.AMOUNT_TOO_LARGE, amount_range(low=False)),
            ],
        ),
        "without_message": pa.Column(nullable=True, checks=[_check(ErrorCode.NOT_A_BOOLEAN, lambda s: ctx.without_message()[1])]),
        "public_title": pa.Column(nullable=True, checks=text_checks("public_title", r.max_title_len)),
        "public_message": pa.Column(nullable=True, checks=text_checks("public_message", r.max_message_len)),
        "private_comment": pa.Column(
            nullable=True, checks=[_check(ErrorCode.TEXT_TOO_LONG, length_ok("private_comment", r.max_comment_len))]
        ),
        "assignment_id": pa.Column(
            nullable=True, checks=[_check(ErrorCode.TEXT_TOO_LONG, length_ok("assignment_id", r.max_cell_chars))]
        ),
        "bonus_key": pa.Column(
            nullable=True,
            checks=[
                _check(ErrorCode.TEXT_TOO_LONG, length_ok("bonus_key", r.max_bonus_key_len)),
                _check(ErrorCode.BONUS_KEY_REPEATED, bonus_key_first),
            ],
        ),
    }
    return pa.DataFrameSchema(columns, strict=False, coerce=False, ordered=False)


def _languages(p: _TextObject) -> list[str]:
    if p.canonical is None:
        return []
    return list(orjson.loads(p.canonical))


# --- entry point --------------------------------------------------------------------------------


def validate_rows(frame: pd.DataFrame, rules: ValidationRules | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(checked, errors) for the canonical sheet frame; never raises for bad values.

    `checked` keeps every row in order and adds `amount_cents` (Int64, NA where the amount is not an
    exact cents value), `without_message` as bool, canonical JSON in `public_title`/`public_message`
    where they parse, and `is_valid`. `errors` holds one row per problem (ERROR_COLUMNS).
    """
    rules = rules or ValidationRules()
    work = frame.reset_index(drop=True)
    # a column the frame lacks is an empty column: required ones are then reported row by row
    for c in TEXT_COLUMNS:
        if c not in work.columns:
            work[c] = pd.Series([None] * len(work), dtype=object)
    ctx = _Context(rules, work)
    failures = None
    try:
        _schema(ctx).validate(work, lazy=True, inplace=True)
    except SchemaErrors as exc:
        failures = exc.failure_cases
    errors = _errors_frame(work, failures, ctx)
    a, without = ctx.amounts(), ctx.without_message()[0]
    # the frame carries the codes of user_id, title and message (contract.CARRIED_CODES): keys and dedupe
    # read them instead of factorising the same columns again
    carried = {"user_id": ctx.codes("user_id")[0].astype(np.int32)}
    texts = {}
    for column in ("public_title", "public_message"):
        codes, parsed = ctx.text_objects(column)
        raw = ctx.codes(column)[1]
        # canonical JSON where the text parses, else the text as written: coded once per distinct text
        final = np.array([p.canonical if p.canonical is not None else r for p, r in zip(parsed[:-1], raw)],
                         dtype=object)
        final_codes, final_uniques = pd.factorize(final) if len(final) else (np.empty(0, np.intp), final)
        row_codes = np.append(final_codes, -1)[codes]  # code -1 (missing) picks the appended -1
        texts[column] = np.append(np.asarray(final_uniques, dtype=object), np.array([None], dtype=object))[row_codes]
        carried[column] = row_codes.astype(np.int32)
    # pandera keeps the schema (whose checks hold ctx) in a registry keyed by the frame; drop the
    # parsed data now so no frame outlives this call
    ctx.cache.clear()
    ctx.frame = None

    checked = work.copy(deep=False)
    checked["amount_cents"] = pd.array(np.where(a.has_cents, a.cents, 0), dtype="Int64")
    checked.loc[~a.has_cents, "amount_cents"] = pd.NA
    for column, values in texts.items():
        checked[column] = pd.Series(values, dtype=object)
    checked["without_message"] = without
    bad_rows = np.zeros(len(work), dtype=bool)
    if len(errors):
        bad_rows[errors["_pos"].to_numpy()] = True
    checked["is_valid"] = ~bad_rows
    for column, codes in carried.items():
        checked[codes_column(column)] = codes
    checked.index = frame.index
    release_memory()
    return checked, errors.drop(columns="_pos").reset_index(drop=True)


_CODE_ORDER = {c.value: i for i, c in enumerate(ErrorCode)}
_COLUMN_ORDER = {c: i for i, c in enumerate(
    ["user_id", "amount", "assignment_id", "private_comment", "public_title", "public_message", "without_message", "bonus_key"]
)}


def _errors_frame(work: pd.DataFrame, failures: pd.DataFrame | None, ctx: _Context) -> pd.DataFrame:
    if failures is None or not len(failures):
        return pd.DataFrame({c: pd.Series(dtype=object) for c in ERROR_COLUMNS + ["_pos"]}).astype(
            {"source_row": "int64", "_pos": "int64"})
    f = failures[failures["index"].notna()]
    pos = f["index"].astype(np.int64).to_numpy()
    codes = [c if c in _CODE_ORDER else (ErrorCode.REQUIRED.value if c == "not_nullable" else ErrorCode.OTHER.value)
             for c in f["check"].astype(str)]
    columns = f["column"].astype(str).tolist()
    values = {c: work[c].to_numpy(dtype=object) for c in set(columns) if c in work.columns}
    messages = [
        _message(ErrorCode(code), column, values[column][p] if column in values else None, ctx)
        for code, column, p in zip(codes, columns, pos)
    ]
    out = pd.DataFrame(
        {
            "source_file": work["source_file"].to_numpy(dtype=object)[pos],
            "source_row": work["source_row"].to_numpy(dtype=np.int64)[pos],
            "column": columns,
            "code": codes,
            "message": messages,
            "_pos": pos,
        }
    )
    out = out.astype({"source_file": object, "column": object, "code": object, "message": object})
    order = np.lexsort((
        out["code"].map(_CODE_ORDER).to_numpy(),
        out["column"].map(_COLUMN_ORDER).fillna(99).to_numpy(),
        pos,
    ))
    return out.iloc[order].drop_duplicates(["_pos", "column", "code"]).reset_index(drop=True)


def _read_as(text: str, rules: ValidationRules) -> str:
    """" (read as $1,099.50)" for an amount written with separators or signs, so the reading can be checked."""
    cents = read_amount(text, decimal_comma=rules.decimal_comma).cents()
    return "" if cents is None or _PLAIN_AMOUNT.fullmatch(text) else f" (read as {format_usd(cents)})"


def _message(code: ErrorCode, column: str, value: Any, ctx: _Context) -> str:
    """The sentence a finance person reads next to the row."""
    r = ctx.rules
    v = "" if value is None else str(value)
    shown = v if len(v) <= 60 else v[:57] + "..."
    label = column.replace("_", " ")
    if code is ErrorCode.REQUIRED:
        return f"{label} is missing"
    if code is ErrorCode.USER_ID_FORMAT:
        return f"user id {shown!r} is not a Toloka user id (32 characters 0-9 and a-f, lower case)"
    if code is ErrorCode.AMOUNT_FORMULA:
        return f"amount {shown!r}: formula not calculated: open and save the file in Excel"
    if code is ErrorCode.AMOUNT_CURRENCY:
        found = read_amount(v, decimal_comma=r.decimal_comma).detail
        return f"amount {shown!r} is in {found!r}, not USD: only USD amounts are paid (write it like 12.50 or $12.50)"
    if code is ErrorCode.AMOUNT_DECIMAL_COMMA:
        return (f"amount {shown!r} uses a decimal comma: pass --decimal-comma if the sheet's locale writes 12,50 "
                "for 12.50")
    if code is ErrorCode.AMOUNT_DECIMAL_POINT:
        return (f"amount {shown!r} uses a decimal point, but --decimal-comma reads ',' as the decimal mark: run "
                "without --decimal-comma if the sheet writes 1,234.50")
    if code is ErrorCode.AMOUNT_AMBIGUOUS:
        digits = "".join(c for c in v if c.isdigit())
        mark = "," if r.decimal_comma else "."
        return (f"amount {shown!r} could be {digits} or {digits[:-3]}{mark}{digits[-3:]}: write {digits} or "
                f"{digits}{mark}00 (a thousands separator alone is ambiguous)")
    if code is ErrorCode.AMOUNT_NOT_A_NUMBER:
        return f"amount {shown!r} is not a number (write it like 1.50)"
    if code is ErrorCode.AMOUNT_TOO_MANY_DECIMALS:
        return f"amount {shown} has more than {r.max_decimals} decimals"
    if code is ErrorCode.AMOUNT_TOO_SMALL:
        return f"amount {shown}{_read_as(v, r)} is below the minimum of {format_usd(r.min_cents)}"
    if code is ErrorCode.AMOUNT_TOO_LARGE:
        return f"amount {shown}{_read_as(v, r)} is above the maximum of {format_usd(r.max_cents)}"
    if code is ErrorCode.NOT_A_BOOLEAN:
        return f"without message {shown!r} is not one of true/false/yes/no/1/0"
    if code in (ErrorCode.NOT_A_TEXT_OBJECT, ErrorCode.LANGUAGE_NOT_ALLOWED, ErrorCode.TEXT_TOO_LONG) and column in (
        "public_title", "public_message",
    ):
        p = _parse_text_object(v)
        if code is ErrorCode.NOT_A_TEXT_OBJECT:
            return f"{label} {p.problem}"
        if code is ErrorCode.LANGUAGE_NOT_ALLOWED:
            bad = [k for k in _languages(p) if k not in r.languages]
            return (f"{label} uses language code(s) {', '.join(bad)}; use upper-case 2-letter codes from: "
                    f"{', '.join(sorted(r.languages))}")
        limit = r.max_title_len if column == "public_title" else r.max_message_len
        return f"{label} is {p.longest} characters long in one language; the limit is {limit}"
    if code is ErrorCode.TEXT_TOO_LONG:
        limit = {"private_comment": r.max_comment_len, "bonus_key": r.max_bonus_key_len}.get(column, r.max_cell_chars)
        return f"{label} is {len(v)} characters long; the limit is {limit}"
    if code is ErrorCode.TEXT_REQUIRED:
        return f"{label} is needed unless without message is true (give at least one language, e.g. EN)"
    if code is ErrorCode.TEXT_NOT_ALLOWED:
        return f"{label} must be empty when without message is true"
    if code is ErrorCode.BONUS_KEY_REPEATED:
        return f"bonus key {shown!r} is used by an earlier row of this batch"
    return f"{label}: {shown!r} failed a check"
