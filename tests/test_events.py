"""Ticks and events: exact prices, and the times they carry."""

from __future__ import annotations

from decimal import Decimal

import pytest

import ticker.sources
from ticker.events import check_price, exact_price


@pytest.mark.parametrize(
    ("value", "price"),
    [
        ("67012.35000000", "67012.35000000"),  # kept as given, trailing zeros too
        (" 0.00001234 ", "0.00001234"),
        (Decimal("0.00001234"), "0.00001234"),
        (Decimal("1E-8"), "0.00000001"),  # plain notation, never an exponent
        (Decimal("12345678901234567890.5"), "12345678901234567890.5"),
    ],
)
def test_exact_price_keeps_the_decimal_as_given(value: object, price: str) -> None:
    assert exact_price(value) == price


@pytest.mark.parametrize(
    "value",
    [0.1, 5, True, None, "abc", "-1.5", "0", "0.000", "1e5", "1,5", "1٣", Decimal("NaN")],
)
def test_exact_price_refuses_what_is_not_a_positive_decimal(value: object) -> None:
    with pytest.raises(ValueError):
        exact_price(value)


def test_check_price_refuses_a_trailing_newline() -> None:
    # A source's price goes to the log as given: "1.5\n" is not a plain decimal.
    with pytest.raises(ValueError):
        check_price("1.5\n")
    assert check_price("1.5") == "1.5"


def test_custom_sources_still_import_exact_price_from_ticker_sources() -> None:
    assert ticker.sources.exact_price is exact_price
