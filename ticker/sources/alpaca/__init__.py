"""US stocks through Alpaca (alpaca-py, the free IEX feed): ``alpaca`` and ``alpaca:trades``.

- ``alpaca``: the latest trade of every tracked stock, polled once an interval
  in one request (:mod:`ticker.sources.alpaca.polled`);
- ``alpaca:trades``: every IEX trade, streamed on the feed machinery
  (:mod:`ticker.sources.alpaca.trades`);
- the market's hours from Alpaca's clock, asked rarely
  (:mod:`ticker.sources.alpaca.clock`): while it is closed nothing is asked and
  nothing counts as an error, and the stocks are *closed*, not stale;
- alpaca-py's REST clients with a timeout, exact decimals and our errors
  (:mod:`ticker.sources.alpaca.client`).
"""

from __future__ import annotations

from ticker.sources.alpaca.common import Stocks
from ticker.sources.alpaca.polled import AlpacaPolledSource
from ticker.sources.alpaca.trades import AlpacaTradesSource

__all__ = ["AlpacaPolledSource", "AlpacaTradesSource", "Stocks"]
