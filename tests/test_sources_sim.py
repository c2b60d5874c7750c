"""The sim source: reproducible walks, exact decimal prices, resuming."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from ticker.events import Event, check_price
from ticker.sources import PROFILES, SimSource, format_price, profile_for

SYMBOLS = ["BTC-USD", "ETH-USD", "DOGE-USD", "PEPE-USD", "AAPL", "EUR-USD", "USD-JPY", "ZZZ"]
T0 = 1_795_255_200_000_000


def walk(seed: int | None, steps: int = 50, interval: float = 1.0) -> list[list[str]]:
    source = SimSource(SYMBOLS, interval, seed)
    return [[t.price for t in source.next_ticks(T0 + i)] for i in range(steps)]


def test_the_same_seed_gives_the_same_prices() -> None:
    assert walk(7) == walk(7)


def test_another_seed_gives_other_prices() -> None:
    assert walk(7) != walk(8)


def test_next_ticks_gives_one_tick_per_symbol_stamped_now() -> None:
    source = SimSource(SYMBOLS, 1.0, 1)
    got = source.next_ticks(T0)
    assert [t.symbol for t in got] == SYMBOLS
    assert {t.ts for t in got} == {T0}


def test_prices_are_plain_decimals_with_the_profiles_decimals() -> None:
    source = SimSource(SYMBOLS, 60.0, 3)
    for step in range(200):
        for tick in source.next_ticks(T0 + step):
            decimals = profile_for(tick.symbol).decimals
            assert re.fullmatch(rf"\d+\.\d{{{decimals}}}", tick.price), tick
            assert check_price(tick.price) == tick.price  # the log would accept it
            assert Decimal(tick.price) > 0


def test_prices_start_near_the_profile_and_move() -> None:
    source = SimSource(["BTC-USD"], 1.0, 5)
    prices = [Decimal(source.next_ticks(T0)[0].price) for _ in range(100)]
    start = Decimal(str(PROFILES["BTC-USD"].start))
    assert all(start * Decimal("0.9") < p < start * Decimal("1.1") for p in prices)
    assert len(set(prices)) > 10


def test_resume_continues_from_the_logs_latest_prices() -> None:
    fresh = SimSource(["BTC-USD", "AAPL"], 1.0, 11)
    resumed = SimSource(["BTC-USD", "AAPL"], 1.0, 11)
    resumed.resume([Event(1, "BTC-USD", "134000.00", T0), Event(2, "MSFT", "1.00", T0)])
    a = {t.symbol: Decimal(t.price) for t in fresh.next_ticks(T0)}
    b = {t.symbol: Decimal(t.price) for t in resumed.next_ticks(T0)}
    # Same shocks from the same seed: BTC moves by the same factor from twice the price.
    assert abs(b["BTC-USD"] - 2 * a["BTC-USD"]) <= Decimal("0.02")
    assert b["AAPL"] == a["AAPL"]  # no event for it: its walk is untouched


def test_profile_for_an_unknown_symbol_is_stable() -> None:
    assert profile_for("ZZZ") == profile_for("ZZZ")
    assert 10 <= profile_for("ZZZ").start < 500


@pytest.mark.parametrize(
    ("price", "decimals", "expected"),
    [
        (0.00001234, 10, "0.0000123400"),
        (1.234e-05, 8, "0.00001234"),
        (1e-10, 10, "0.0000000001"),
        (67012.345, 2, "67012.34"),  # half to even
        (67012.355, 2, "67012.36"),
        (1e15, 2, "1000000000000000.00"),
        (230.0, 2, "230.00"),
    ],
)
def test_format_price_is_a_plain_decimal(price: float, decimals: int, expected: str) -> None:
    assert format_price(price, decimals) == expected


def test_format_price_never_uses_exponent_notation() -> None:
    for exponent in range(-12, 16):
        text = format_price(1.2345 * 10.0**exponent, 10)
        assert "e" not in text.lower(), text
        assert re.fullmatch(r"\d+\.\d{10}", text), text


def test_every_tick_has_a_size_reproducible_with_the_seed() -> None:
    def sizes(seed: int) -> list[str | None]:
        source = SimSource(SYMBOLS, 1.0, seed)
        return [t.size for _ in range(200) for t in source.next_ticks(T0)]

    assert sizes(3) == sizes(3) and sizes(3) != sizes(4)
    # Sizes come from a stream of their own: a seed's prices are the same as before sizes.
    assert walk(3) == walk(3)


def test_sizes_are_plain_decimals_in_lots_around_the_profiles_median() -> None:
    import re
    import statistics

    from ticker.events import check_size
    from ticker.sources.sim import PROFILES

    source = SimSource(["BTC-USD", "AAPL"], 1.0, 9)
    drawn: dict[str, list[str]] = {"BTC-USD": [], "AAPL": []}
    for _ in range(2000):
        for tick in source.next_ticks(T0):
            assert tick.size is not None
            drawn[tick.symbol].append(check_size(tick.size))
    assert all(re.fullmatch(r"0\.[0-9]{8}|[1-9][0-9]*\.[0-9]{8}", s) for s in drawn["BTC-USD"])
    assert all(re.fullmatch(r"[1-9][0-9]*", s) for s in drawn["AAPL"])
    for symbol, values in drawn.items():
        median = statistics.median(float(v) for v in values)
        assert PROFILES[symbol].size / 1.5 < median < PROFILES[symbol].size * 1.5
