"""Money helpers: exact text both ways, never float arithmetic."""

from __future__ import annotations

from decimal import Decimal

import orjson
from hypothesis import given
from hypothesis import strategies as st

from pipeline.money import cents_from_json, format_cents, format_usd


def test_formats_for_the_wire_and_for_people() -> None:
    assert [format_cents(c) for c in (0, 7, 150, 10000, -5)] == ["0.00", "0.07", "1.50", "100.00", "-0.05"]
    assert format_usd(123456789) == "$1,234,567.89"


@given(st.integers(min_value=0, max_value=10**9))
def test_any_amount_survives_the_wire_and_orjson_exactly(cents: int) -> None:
    sent = orjson.dumps({"amount": orjson.Fragment(format_cents(cents))})
    received = orjson.loads(sent)["amount"]
    assert cents_from_json(received) == cents
    assert Decimal(format_cents(cents)) * 100 == cents
