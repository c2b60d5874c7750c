"""The US stock market's hours, from Alpaca's clock, asked rarely.

The clock answers ``is_open``, ``next_open`` and ``next_close``; those times
change only when the market opens or closes, so it is asked once at first
use, again when the time it named for the next change has come, and at the
latest every ``MAX_AGE`` seconds (a halt or an early close announced late).
Asks are at least ``MIN_GAP`` seconds apart, so a clock that still says
"closed" a moment after the named opening is not hammered.  Any thread may
ask: the web workers (``/api/symbols``, ``/healthz``) and the producer share
one answer per process, under a lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ticker.errors import SourceError
from ticker.events import format_ts, parse_ts
from ticker.sources.alpaca.client import ClockClient

logger = logging.getLogger("ticker.sources")

MAX_AGE = 600.0  # seconds an answer is trusted at most
MIN_GAP = 30.0  # seconds between two asks, whatever happens


@dataclass(frozen=True)
class Hours:
    """One answer of the clock: open or not, and the next changes (microseconds, UTC)."""

    is_open: bool
    next_open: int
    next_close: int

    @property
    def next_change(self) -> int:
        """Return when this answer stops being true: the next close if open, else the next open."""
        return self.next_close if self.is_open else self.next_open

    def report(self) -> dict[str, Any]:
        """Return the ``/healthz`` form."""
        return {
            "market": "open" if self.is_open else "closed",
            "next_open": format_ts(self.next_open),
            "next_close": format_ts(self.next_close),
        }


def parse_hours(answer: object) -> Hours:
    """Read the clock's JSON answer; raise ``SourceError`` when it is not one."""
    try:
        if not isinstance(answer, dict) or not isinstance(answer.get("is_open"), bool):
            raise ValueError("no is_open")
        opens = _time(answer["next_open"])
        closes = _time(answer["next_close"])
    except (KeyError, TypeError, ValueError) as exc:
        raise SourceError(
            f"alpaca: the clock's answer is not is_open/next_open/next_close ({exc}): "
            f"{answer!r:.160}"
        ) from None
    return Hours(answer["is_open"], opens, closes)


def _time(raw: object) -> int:
    if not isinstance(raw, str):
        raise TypeError(f"a time is a string, got {type(raw).__name__}")
    return parse_ts(raw)


class MarketClock:
    """The latest answer of Alpaca's clock, asked again only when it may have changed."""

    def __init__(
        self,
        client: ClockClient,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.wall = wall
        self.monotonic = monotonic
        self.hours: Hours | None = None
        self._asked_at: float | None = None  # monotonic, of the last ask, answered or not
        self._answered_at = 0.0
        self._failure: SourceError | None = None  # why the last ask failed, until one succeeds
        self._logged: SourceError | None = None
        self._lock = threading.Lock()

    def current(self) -> Hours:
        """Return the market hours, asking the clock when due; raise ``SourceError`` if it fails.

        A failure keeps the last answer, if any, as long as it still holds.
        """
        with self._lock:
            if self._due():
                try:
                    self._ask()
                except SourceError as exc:
                    if self.hours is None:
                        raise
                    logger.warning(
                        "alpaca: the market clock failed, its last answer holds: %s", exc
                    )
            if self.hours is None:
                raise self._failure or SourceError("alpaca: the market clock has not answered")
            return self.hours

    def known(self) -> Hours | None:
        """Return the market hours, asking when due but never raising (``None``: unknown)."""
        try:
            return self.current()
        except SourceError as exc:
            if exc is not self._logged:  # once per failed ask, not once per page's poll
                self._logged = exc
                logger.warning("alpaca: market hours unknown: %s", exc)
            return None

    def _due(self) -> bool:
        now = self.monotonic()
        if self._asked_at is not None and now - self._asked_at < MIN_GAP:
            return False
        hours = self.hours
        return (
            hours is None
            or now - self._answered_at >= MAX_AGE
            or self.wall() * 1_000_000 >= hours.next_change
        )

    def _ask(self) -> None:
        self._asked_at = self.monotonic()
        try:
            hours = parse_hours(self.client.get_clock())
        except SourceError as exc:
            self._failure = exc
            if self.hours is not None and self.wall() * 1_000_000 >= self.hours.next_change:
                self.hours = None  # the last answer no longer holds
            raise
        if self.hours is None or hours.is_open != self.hours.is_open:
            logger.info(
                "alpaca: the market is %s (next open %s, next close %s)",
                "open" if hours.is_open else "closed",
                format_ts(hours.next_open),
                format_ts(hours.next_close),
            )
        self.hours = hours
        self._failure = None
        self._answered_at = self._asked_at
