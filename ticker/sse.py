"""The Server-Sent Events wire format: turn events and notices into messages.

Pure: no Flask, no database.  Every function returns the bytes of whole
messages (ending in a blank line), ready to be written to a client.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ticker.events import Event, format_ts


def message(event: str, data: Any, id: int | None = None) -> bytes:
    """Encode one named message whose data is ``data`` as compact one-line JSON."""
    head = f"id: {id}\n" if id is not None else ""
    body = json.dumps(data, separators=(",", ":"))
    return f"{head}event: {event}\ndata: {body}\n\n".encode()


_quoted: dict[str, str] = {}


def _quote(text: str) -> str:
    """Return ``text`` as a JSON string; symbols repeat, so each is quoted once."""
    quoted = _quoted.get(text)
    if quoted is None:
        quoted = json.dumps(text)
        if len(_quoted) < 10_000:
            _quoted[text] = quoted
    return quoted


def tick(event: Event) -> bytes:
    """Encode an event of the log as a ``tick`` message carrying its id.

    The same bytes as ``event.to_json()`` would give, built without ``json.dumps``:
    replay encodes hundreds of thousands of events a second.
    """
    size = event.size
    tail = "}" if size is None else f',"size":{_decimal(size)}}}'
    return (
        f"id: {event.id}\nevent: tick\ndata: "
        f'{{"id":{event.id},"symbol":{_quote(event.symbol)},"price":{_decimal(event.price)},'
        f'"ts":"{format_ts(event.ts)}"{tail}\n\n'
    ).encode()


def _decimal(text: str) -> str:
    """Return a decimal string as JSON; what the log holds needs no escaping, anything else does."""
    plain = text.isascii() and text.replace(".", "", 1).isdigit()
    return f'"{text}"' if plain else json.dumps(text)


def opening(kind: str, head: int, latest: Sequence[Event], **extra: Any) -> bytes:
    """Encode a ``snapshot`` or ``reset`` message: ``head`` and the newest tick per symbol.

    Its ``id`` is ``head``: the client resumes from there.
    """
    body = {**extra, "head": head, "ticks": [e.to_dict() for e in latest]}
    return message(kind, body, id=head)


# The last frame of a stream ended by a shutdown: the client reconnects to whoever answers.
SHUTDOWN_NOTICE = b": shutdown, reconnect\n\n"


def retry(milliseconds: int) -> bytes:
    """Tell the client how long to wait before it reconnects."""
    return f"retry: {milliseconds}\n\n".encode()


def keepalive(id: int | None = None) -> bytes:
    """Encode a keepalive comment, moving the client's resume point to ``id`` if given.

    A frame with an ``id:`` line and no ``data:`` updates a browser's
    ``lastEventId`` without firing an event.
    """
    return b": keepalive\n\n" if id is None else f": keepalive\nid: {id}\n\n".encode()
