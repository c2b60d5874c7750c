"""The symbol grammar: what ``TICKER_SYMBOLS``, ``?symbols=`` and a published tick may name."""

from __future__ import annotations

import re

# The SPEC's grammar, checked on the input as given (before upper-casing, which
# would turn "ﬀ" into "FF"): ASCII only, so nothing in a symbol is ever markup.
SYMBOL_RE = re.compile(r"[A-Za-z0-9^][A-Za-z0-9._/:^=-]{0,31}")
SYMBOL_GRAMMAR = (
    "a symbol is 1 to 32 characters of A-Z 0-9 . - _ / : ^ =, starting with a letter, "
    "a digit or ^ (e.g. BTC-USD, BTC/USDT, BRK.B, ^GSPC, EURUSD=X)"
)


def normalise_symbol(raw: str) -> str:
    """Return ``raw`` stripped and upper-cased, or raise ``ValueError`` when it is not a symbol."""
    symbol = raw.strip()
    if not SYMBOL_RE.fullmatch(symbol):
        raise ValueError(f"{raw[:40]!r} is not a symbol: {SYMBOL_GRAMMAR}")
    return symbol.upper()
