"""A ccxt call's failure, told as one SourceError naming the request, status and cause."""

from __future__ import annotations

from collections.abc import Iterator

import ccxt
import pytest

from tests.fake_exchange import HANG, FakeVenue, rate_limited, serving
from ticker.errors import SourceError
from ticker.sources.ccxtcalls import Calls
from ticker.sources.exchange import make_exchange


@pytest.fixture
def binance() -> Iterator[FakeVenue]:
    with serving("binance") as fake:
        yield fake


@pytest.mark.parametrize(
    ("error", "cause"),
    [
        (ccxt.RequestTimeout, "no answer within 0.5s"),
        (ccxt.RateLimitExceeded, "rate limited"),
        (ccxt.DDoSProtection, "rate limited or banned"),
        (ccxt.OnMaintenance, "the exchange is unavailable"),
        (ccxt.NetworkError, "network error"),
        (ccxt.NullResponse, "malformed answer"),
        (ccxt.OperationFailed, "the exchange failed the request"),
        (ccxt.BadSymbol, "a symbol the exchange does not know"),
        (ccxt.AuthenticationError, "the exchange refused"),
        (KeyError, "malformed answer"),  # ccxt's parser meeting an unexpected shape
    ],
)
def test_each_failure_is_a_source_error_saying_why(error: type[Exception], cause: str) -> None:
    calls = Calls(make_exchange("kraken", timeout=0.5), "ccxt:kraken")

    def fail() -> None:
        raise error("kraken said no")

    with pytest.raises(SourceError) as caught:
        calls(fail)
    assert str(caught.value).startswith(f"ccxt:kraken: request: {cause}: {error.__name__}")
    assert "kraken said no" in str(caught.value)
    assert isinstance(caught.value.__cause__, error)


def test_a_rate_limit_names_the_request_status_and_retry_after(binance: FakeVenue) -> None:
    exchange = make_exchange("binance", base_url=binance.url, timeout=0.5)
    calls = Calls(exchange, "binance")
    binance.script("/api/v3/time", rate_limited("binance", "120", status=418))
    with pytest.raises(SourceError) as caught:
        calls(exchange.fetch_time)
    assert caught.value.retry_after == 120
    assert str(caught.value).startswith(
        f"binance: GET {binance.url}/api/v3/time: HTTP 418 I'm a Teapot (Retry-After 120s): "
        "rate limited or banned: DDoSProtection"
    )


def test_a_timeout_carries_no_status_of_an_earlier_answer(binance: FakeVenue) -> None:
    exchange = make_exchange("binance", base_url=binance.url, timeout=0.3)
    calls = Calls(exchange, "binance")
    binance.script("/api/v3/time", rate_limited("binance", "45"), HANG)
    with pytest.raises(SourceError):
        calls(exchange.fetch_time)
    with pytest.raises(SourceError) as caught:
        calls(exchange.fetch_time)
    assert caught.value.retry_after is None
    assert str(caught.value).startswith(
        f"binance: GET {binance.url}/api/v3/time: no answer within 0.3s"
    )
