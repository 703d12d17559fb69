"""Money as integer cents: reading amounts as finance writes them, formatting for the wire and for people, exact
sums, and reading amounts back from JSON.

An amount text is read into exact digits (never a float) and bounded: at most `MAX_WHOLE_DIGITS` digits before
the decimal mark, so every amount fits the report's decimal128(12, 2) and int64 cents, and any sum of them is
exact (`exact_sum`). The accepted forms (README "Amounts"):

- decimal mark `.` (default) or `,` (`decimal_comma`);
- thousands separators in groups of exactly 3 digits, one kind per amount, the first group 1-3 digits not
  starting with 0: the other one of `.`/`,`, or a space (U+0020, NBSP U+00A0, narrow NBSP U+202F, thin space
  U+2009). So `1,234.50` (default) and `1 234,50`, `1.234,50` (`decimal_comma`); `1.23,4` or `12,34,567` are
  refused;
- `1,234` (or, with `decimal_comma`, `1.234`) is refused as ambiguous: a thousands group, or 3 decimals in the
  other locale; a second group (`1,234,567`) or decimals (`1,234.50`) settle it;
- with `decimal_comma`, a single `.` that cannot be a thousands separator (`12.50`, `0.5`) is a decimal point, as
  .xlsx and Parquet numbers arrive;
- a leading `-` (or U+2212) for a negative amount (refused later as below the minimum);
- the payout currency around the number: `$12.50`, `12.50$`, `US$12.50`, `USD 12.50`, `12.50 USD`; any other
  currency sign or code (`€4.00`, `4.00 EUR`, `£`, `₽`, `RUB`, `CA$`) is refused, naming it;
- a text starting with `=` is a formula whose value was never calculated (a script wrote the .xlsx).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

import numpy as np

# Digits before the decimal mark: 10 keep |cents| < 10**12, inside decimal128(12, 2), and 9 million such
# amounts inside int64; `exact_sum` is exact for any count.
MAX_WHOLE_DIGITS = 10
PAYOUT_CURRENCY = "USD"
_USD_FORMS = frozenset({"$", "US$", "USD"})
_LOCAL_CURRENCY_WORDS = frozenset({"руб", "руб.", "р", "р.", "грн", "грн.", "тг", "тг."})

_SPACES = " \u00a0\u202f\u2009"
# The usual "12.50" / "$12.5": no grouping, no sign, at most 2 decimals; read the same in either locale (validate
# reads these in Arrow, all at once)
PLAIN_AMOUNT = r"\$?(?P<i>[0-9]{1,10})(?:\.(?P<f>[0-9]{0,2}))?"
_PLAIN = re.compile(PLAIN_AMOUNT)


class AmountProblem(StrEnum):
    """Why an amount text is not an amount (validate turns each into a row error with its own code)."""

    NOT_A_NUMBER = "not_a_number"
    FORMULA = "formula"
    CURRENCY = "currency"  # a currency other than the payout currency; `detail` is the sign or code as written
    DECIMAL_COMMA = "decimal_comma"  # reads as a number only with a decimal comma: the flag is missing
    DECIMAL_POINT = "decimal_point"  # reads as a number only with a decimal point: the flag is wrong
    BEYOND_CAP = "beyond_cap"  # more than MAX_WHOLE_DIGITS digits before the decimal mark
    AMBIGUOUS = "ambiguous"  # "1,234" (or "1.234" with a decimal comma): 1234, or 1.234 in the other locale


@dataclass(frozen=True)
class Amount:
    """An amount text read exactly: sign, digits before the decimal mark (no leading zeros), digits after it
    (no trailing zeros), or the problem that stops it being an amount."""

    negative: bool = False
    whole: str = ""
    fraction: str = ""
    problem: AmountProblem | None = None
    detail: str = ""

    @property
    def decimals(self) -> int:
        """Significant decimals: "1.500" has 1."""
        return len(self.fraction)

    def cents(self) -> int | None:
        """Exact cents, or None when the text is no amount or has sub-cent decimals."""
        if self.problem is not None or self.decimals > 2:
            return None
        c = int(self.whole or "0") * 100 + int(self.fraction.ljust(2, "0"))
        return -c if self.negative else c


def read_amount(text: str, *, decimal_comma: bool = False) -> Amount:
    """The amount a sheet cell's text means under the sheet's locale (see the module docstring), never raising."""
    m = _PLAIN.fullmatch(text)
    if m is not None:
        return _amount(False, m.group("i"), m.group("f") or "")
    t = text.strip(_SPACES + "\t\r\n")
    if t.startswith("="):
        return Amount(problem=AmountProblem.FORMULA)
    number, found = _split_currency(t)
    if number is None:
        return Amount(problem=AmountProblem.NOT_A_NUMBER)
    negative = number[:1] in ("-", "\u2212")
    if negative:
        number = number[1:]
    mine = _number(number, decimal_comma)
    other = _number(number, not decimal_comma) if mine is None else None
    if found is not None and found.upper() not in _USD_FORMS:
        if mine is not None or other is not None:
            return Amount(problem=AmountProblem.CURRENCY, detail=found)
        return Amount(problem=AmountProblem.NOT_A_NUMBER)
    if mine is not None:
        if _AMBIGUOUS[decimal_comma].fullmatch(number):
            return Amount(problem=AmountProblem.AMBIGUOUS)
        return _amount(negative, *mine)
    if other is not None:
        return Amount(problem=AmountProblem.DECIMAL_POINT if decimal_comma else AmountProblem.DECIMAL_COMMA)
    return Amount(problem=AmountProblem.NOT_A_NUMBER)


def _amount(negative: bool, whole: str, fraction: str) -> Amount:
    whole, fraction = whole.lstrip("0"), fraction.rstrip("0")
    if len(whole) > MAX_WHOLE_DIGITS:
        return Amount(negative, problem=AmountProblem.BEYOND_CAP)
    return Amount(negative and bool(whole or fraction), whole, fraction)


def _grouped(mark: str, separators: str) -> re.Pattern[str]:
    """Digits, or thousands groups (first 1-3 digits not starting with 0, then groups of 3 after one separator
    kind `s`), then optionally the decimal mark and digits."""
    return re.compile(rf"(?P<i>[1-9][0-9]{{0,2}}(?P<s>[{re.escape(separators)}])[0-9]{{3}}(?:(?P=s)[0-9]{{3}})*"
                      rf"|[0-9]*)(?:{re.escape(mark)}(?P<f>[0-9]*))?")


_NUMBER = {False: _grouped(".", "," + _SPACES), True: _grouped(",", "." + _SPACES)}
# with a decimal comma, a single dot that makes no thousands group ("12.50") is a decimal point
_DECIMAL_POINT = re.compile(r"(?P<i>[0-9]*)\.(?P<f>[0-9]*)")
# one `,` (`.` with a decimal comma) thousands separator and no decimals: a thousands group, or three decimals in
# the other locale; refused rather than risk paying 1000 times the amount
_AMBIGUOUS = {False: re.compile(r"[1-9][0-9]{0,2},[0-9]{3}"), True: re.compile(r"[1-9][0-9]{0,2}\.[0-9]{3}")}
# no currency sign or code, no space after the minus: nothing to split off
_BARE = re.compile(rf"[-\u2212]?[0-9.,][0-9.,{_SPACES}]*")


def _number(text: str, decimal_comma: bool) -> tuple[str, str] | None:
    """(whole digits, fraction digits) of an unsigned number under one locale, or None."""
    m = _NUMBER[decimal_comma].fullmatch(text) or (_DECIMAL_POINT.fullmatch(text) if decimal_comma else None)
    if m is None or not (m.group("i") or m.group("f")):
        return None
    separator = m.groupdict().get("s")
    return m.group("i").replace(separator, "") if separator else m.group("i"), m.group("f") or ""


def _split_currency(t: str) -> tuple[str | None, str | None]:
    """(the number's text with its sign, the currency sign or code written around it or None); the number is None
    when the text has no digit, a currency on both sides, or something around it that is no currency."""
    if _BARE.fullmatch(t):
        return t, None
    if not any(c.isdigit() for c in t):
        return None, None
    sign = ""
    if t[:1] in ("-", "\u2212"):
        sign, t = "-", t[1:].lstrip(_SPACES)
    found = None
    i = 0
    while i < len(t) and not (t[i].isdigit() or t[i] in "-\u2212.,"):
        i += 1
    if i:
        found, t = t[:i].rstrip(_SPACES), t[i:]
        if t[:1] in ("-", "\u2212") and not sign:
            sign, t = "-", t[1:]
    j = len(t)
    while j > 0 and not t[j - 1].isdigit():
        j -= 1
    while j < len(t) and t[j] in ".,":  # "12." and "12. USD": the mark belongs to the number
        j += 1
    if j < len(t):
        if found is not None:  # a sign or code on both sides: not an amount
            return None, None
        found, t = t[j:].lstrip(_SPACES), t[:j]
    if found is not None and not _is_currency(found):
        return None, None
    return sign + t, found


def _is_currency(s: str) -> bool:
    """"$", "€", "US$", "CA$" (a currency sign after at most 3 letters), "USD", "EUR" (an ISO code in capitals;
    "usd" too), or a local abbreviation ("руб.", "р.")."""
    if unicodedata.category(s[-1]) == "Sc":
        return len(s) <= 4 and all(c.isascii() and c.isalpha() for c in s[:-1])
    return ((len(s) == 3 and s.isascii() and s.isalpha() and (s.isupper() or s.upper() == PAYOUT_CURRENCY))
            or s.lower() in _LOCAL_CURRENCY_WORDS)


def exact_sum(cents: np.ndarray) -> int:
    """The exact sum of int64 cents, whatever their count: high and low 32-bit halves summed apart (each sum
    stays far inside int64), joined as a Python int."""
    values = np.asarray(cents, dtype=np.int64)
    high = int((values >> 32).sum())
    low = int((values & 0xFFFFFFFF).sum())
    return (high << 32) + low


def format_cents(cents: int) -> str:
    """"12.30" — the exact decimal text used on the wire and in reports."""
    sign = "-" if cents < 0 else ""
    c = abs(int(cents))
    return f"{sign}{c // 100}.{c % 100:02d}"


def format_usd(cents: int) -> str:
    """"$1,234.50" for people."""
    sign = "-" if cents < 0 else ""
    c = abs(int(cents))
    return f"{sign}${c // 100:,}.{c % 100:02d}"


def cents_from_json(amount: object) -> int:
    """Exact cents of an amount as a JSON parser gave it.

    orjson yields floats; `repr` of a float is the shortest text that reads back as the same float, which
    is the decimal text the server sent (e.g. 0.07 -> "0.07"), so no float arithmetic touches the value.
    """
    text = repr(amount) if isinstance(amount, float) else str(amount)
    return int(Decimal(text) * 100)
