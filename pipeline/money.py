"""Money as integer cents: formatting for the wire and for people, and reading amounts back from JSON."""

from __future__ import annotations

from decimal import Decimal


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
