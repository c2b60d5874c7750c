"""The two value types of ticker: a *tick* from a source, an *event* in the log.

A tick has no id; appending it to the log makes it an event, whose id is the
SSE id.  Prices are decimal strings kept exactly as the source gave them, and
times are integer microseconds since the Unix epoch, shown as ISO 8601 UTC.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# ASCII digits, matched whole: \d also takes "٣", and "$" a trailing newline.
_PRICE_RE = re.compile(r"(?:0|[1-9][0-9]{0,19})(?:\.[0-9]{1,18})?")


@dataclass(frozen=True, slots=True)
class Tick:
    """A price for a symbol at a time, before it has an id."""

    symbol: str
    price: str
    ts: int  # microseconds since the epoch, UTC
    size: str | None = None  # the traded quantity, when the source gave one


class Event(NamedTuple):
    """A tick in the log; ``id`` is its position there.

    A named tuple rather than a dataclass: replay builds hundreds of thousands
    a second straight from database rows.
    """

    id: int
    symbol: str
    price: str
    ts: int
    size: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON shape of the event, as the API and the stream send it.

        ``size`` is left out, not null, when the tick had none.
        """
        shape = {
            "id": self.id,
            "symbol": self.symbol,
            "price": self.price,
            "ts": format_ts(self.ts),
        }
        if self.size is not None:
            shape["size"] = self.size
        return shape

    def to_json(self) -> str:
        """Return the event as one line of compact JSON."""
        return json.dumps(self.to_dict(), separators=(",", ":"))


def now_us() -> int:
    """Return the current time in microseconds since the epoch."""
    return time.time_ns() // 1000


_last_second: tuple[int, str] = (0, "1970-01-01T00:00:00")


def format_ts(ts: int) -> str:
    """Format microseconds since the epoch as ISO 8601 UTC with a ``Z``."""
    global _last_second
    second, micro = divmod(ts, 1_000_000)
    cached_second, prefix = _last_second  # ticks come in runs within one second
    if second != cached_second:
        prefix = (_EPOCH + timedelta(seconds=second)).strftime("%Y-%m-%dT%H:%M:%S")
        _last_second = (second, prefix)
    return f"{prefix}.{micro:06d}Z"


def parse_ts(raw: str) -> int:
    """Parse an ISO 8601 time with a zone into microseconds; raise ``ValueError`` if not."""
    parsed = datetime.fromisoformat(raw.replace("z", "Z"))
    if parsed.tzinfo is None:
        raise ValueError("the time has no zone; add Z or an offset such as +00:00")
    try:
        # A time that is past year 9999 in UTC could be stored but never shown again.
        parsed = parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is out of range in UTC") from None
    delta = parsed - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def check_price(raw: str) -> str:
    """Return ``raw`` when it is a plain positive decimal such as ``67012.35``."""
    if not _PRICE_RE.fullmatch(raw) or not raw.strip("0."):
        raise ValueError('expected a positive decimal such as "67012.35"')
    return raw


def check_size(raw: str) -> str:
    """Return ``raw`` when it is a plain non-negative decimal such as ``0.00100000``."""
    if not _PRICE_RE.fullmatch(raw):
        raise ValueError('expected a non-negative decimal such as "0.0015"')
    return raw


def _exact_text(value: object) -> str:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, str):
        return value.strip()
    raise ValueError(f"expected a decimal string, got {type(value).__name__}")


def exact_size(value: object) -> str:
    """Return a quoted size as the exact decimal string given; raise ``ValueError`` if not one."""
    text = _exact_text(value)
    try:
        return check_size(text)
    except ValueError:
        raise ValueError(f'{text[:40]!r} is not a non-negative decimal such as "0.0015"') from None


def exact_price(value: object) -> str:
    """Return a quoted price as the exact decimal string given; raise ``ValueError`` if not one.

    Strings are kept as they are (``"67012.35000000"`` stays so).  A JSON number
    must have been parsed with ``parse_float=Decimal`` so that no float ever
    rounds it; it is written out in plain notation.
    """
    text = _exact_text(value)
    try:
        return check_price(text)
    except ValueError:
        raise ValueError(f'{text[:40]!r} is not a positive decimal such as "67012.35"') from None
