"""The ``coinbase`` source: Coinbase's public spot price of each pair.

``GET {base}/v2/prices/BTC-USD/spot`` answers
``{"data": {"amount": "67012.35", "base": "BTC", "currency": "USD"}}``.  The API
has no call for several pairs, so each interval asks for every pair, a few
requests side by side, and stamps the prices with the interval's time.  A pair
Coinbase does not know (``404``/``400``) is logged and skipped; any other
failure fails the interval but keeps the prices that did arrive.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor

from ticker.errors import SourceError
from ticker.events import Tick, exact_price
from ticker.sources._http import HTTPSource, StatusError

MAX_PARALLEL = 8


class CoinbaseSource(HTTPSource):
    """Spot prices from ``api.coinbase.com`` (or ``TICKER_SOURCE_URL``), one request per pair."""

    name = "coinbase"
    default_url = "https://api.coinbase.com"
    join = "-"

    # The request threads start with the first fetch; one lock guards that for every instance.
    _pool: ThreadPoolExecutor | None = None
    _pool_lock = threading.Lock()

    def next_ticks(self, now_us: int) -> list[Tick]:
        """Ask for every pair's spot price and return a tick for each one that came."""
        pool = self._executor()
        asked: dict[str, Future[str]] = {n: pool.submit(self.spot, n) for n in self.names.values()}
        prices: dict[str, str] = {}
        unknown: dict[str, str] = {}
        failures: list[SourceError] = []
        for name, future in asked.items():
            try:
                prices[name] = future.result()
            except StatusError as exc:
                if exc.status in (400, 404):
                    unknown[name] = str(exc)
                else:
                    failures.append(exc)
            except SourceError as exc:
                failures.append(exc)
        if failures:
            waits = [f.retry_after for f in failures if f.retry_after is not None]
            got = [Tick(s, prices[n], now_us) for s, n in self.names.items() if n in prices]
            more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
            raise SourceError(
                f"{failures[0]}{more}", retry_after=max(waits) if waits else None, ticks=got
            )
        return self.ticks_from(prices, now_us, unknown)

    def spot(self, name: str) -> str:
        """Return the spot price of one pair (``BTC-USD``) exactly as Coinbase wrote it."""
        path = f"/v2/prices/{name}/spot"
        answer = self.get_json(path)
        where = f"{self.name}: GET {self.base_url}{path}"
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, dict) or "amount" not in data:
            raise SourceError(
                f'{where}: expected {{"data": {{"amount": ...}}}}, got {answer!r:.120}'
            )
        base, currency = data.get("base"), data.get("currency")
        answered = (
            f"{base}-{currency}" if isinstance(base, str) and isinstance(currency, str) else None
        )
        if answered is not None and answered.upper() != name.upper():
            raise SourceError(f"{where}: the answer is for {base}-{currency}")
        try:
            return exact_price(data["amount"])
        except ValueError as exc:
            raise SourceError(f"{where}: amount {exc}") from None

    def close(self) -> None:
        """Stop the request threads and close the connection pool."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
        super().close()

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                workers = max(1, min(MAX_PARALLEL, len(self.names)))
                self._pool = ThreadPoolExecutor(workers, thread_name_prefix="coinbase")
            return self._pool
