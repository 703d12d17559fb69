"""Money as integer cents: parsing sheet text exactly, formatting for people and for the wire."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

import pandas as pd

CENT = Decimal("0.01")


def parse_cents(text: object) -> int | None:
    """Exact cents of a decimal string like "1.5" or "$1.50"; None if it is not a number with <= 2 decimals."""
    if text is None:
        return None
    s = str(text).strip().lstrip("$").strip()
    try:
        d = Decimal(s)
    except InvalidOperation:
        return None
    if not d.is_finite() or d.adjusted() > 12:
        return None
    if d != d.quantize(CENT):
        return None
    return int(d * 100)


def cents_to_decimal(cents: int) -> Decimal:
    return (Decimal(int(cents)) / 100).quantize(CENT)


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


def cents_series_to_decimal(cents: pd.Series) -> list[Decimal | None]:
    return [None if pd.isna(c) else cents_to_decimal(int(c)) for c in cents]
