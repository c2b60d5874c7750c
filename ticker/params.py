"""Parse and check the query parameters shared by the stream and the API."""

from __future__ import annotations

import re
from collections.abc import Sequence

from ticker.config import SYMBOL_GRAMMAR, Settings, normalise_symbol
from ticker.errors import RequestError

# ASCII digits only: \d and str.isdigit() also accept "²" or "٣".
_DIGITS_RE = re.compile(r"[0-9]{1,19}")
MAX_ID = 2**63 - 1


def symbols(raw: str | None, settings: Settings) -> list[str]:
    """Return the symbols named in ``raw`` (all tracked ones when absent), checked."""
    if raw is None or not raw.strip():
        return list(settings.symbols)
    parts = [p for p in (p.strip() for p in raw.split(",")) if p]
    chosen: list[str] = []
    for part in parts:
        try:
            symbol = normalise_symbol(part)
        except ValueError:
            raise RequestError(
                400, f"malformed symbol {part[:40]!r}: {SYMBOL_GRAMMAR}", symbol=part[:40]
            ) from None
        if symbol not in chosen:
            chosen.append(symbol)
    if len(chosen) > settings.max_symbols:
        raise RequestError(
            400,
            f"too many symbols: {len(chosen)} asked, at most {settings.max_symbols}",
            max_symbols=settings.max_symbols,
        )
    unknown_symbols(chosen, settings.symbols)
    return chosen


def unknown_symbols(chosen: Sequence[str], tracked: Sequence[str]) -> None:
    """Refuse with 404 if any of ``chosen`` is not tracked."""
    unknown = [s for s in chosen if s not in tracked]
    if unknown:
        raise RequestError(
            404, f"not tracked: {', '.join(unknown)}", unknown=unknown, tracked=list(tracked)
        )


def event_id(raw: str | None, name: str) -> int | None:
    """Return ``raw`` as a non-negative 63-bit id, None when absent, 400 otherwise."""
    if raw is None or not raw.strip():
        return None
    value = raw.strip()
    if not _DIGITS_RE.fullmatch(value) or int(value) > MAX_ID:
        raise RequestError(
            400, f"{name} must be a non-negative integer below 2^63, got {value[:40]!r}"
        )
    return int(value)


def limit(raw: str | None, default: int, cap: int) -> int:
    """Return ``raw`` as a positive page size, capped at ``cap`` (``default`` when absent)."""
    if raw is None or not raw.strip():
        return default
    value = raw.strip()
    if not _DIGITS_RE.fullmatch(value) or int(value) < 1:
        raise RequestError(400, f"limit must be a positive integer, got {value[:40]!r}")
    return min(int(value), cap)


def last_event_id(header: str | None, query: str | None) -> int | None:
    """Return a stream's resume point: the ``Last-Event-ID`` header, else ``last_event_id``.

    The header wins: a browser's reconnect carries it along with the old URL.
    """
    from_header = event_id(header, "Last-Event-ID")
    return from_header if from_header is not None else event_id(query, "last_event_id")
