"""The Server-Sent Events wire format: turn events and notices into messages.

Pure: no Flask, no database.  Every function returns the bytes of whole
messages (ending in a blank line), ready to be written to a client.
"""

from __future__ import annotations

import json
from typing import Any

from ticker.events import Event


def message(event: str, data: Any, id: int | None = None) -> bytes:
    """Encode one named message whose data is ``data`` as compact one-line JSON."""
    head = f"id: {id}\n" if id is not None else ""
    body = json.dumps(data, separators=(",", ":"))
    return f"{head}event: {event}\ndata: {body}\n\n".encode()


def tick(event: Event) -> bytes:
    """Encode an event of the log as a ``tick`` message carrying its id."""
    return f"id: {event.id}\nevent: tick\ndata: {event.to_json()}\n\n".encode()


def retry(milliseconds: int) -> bytes:
    """Tell the client how long to wait before it reconnects."""
    return f"retry: {milliseconds}\n\n".encode()


def keepalive(id: int | None = None) -> bytes:
    """Encode a keepalive comment, moving the client's resume point to ``id`` if given.

    A frame with an ``id:`` line and no ``data:`` updates a browser's
    ``lastEventId`` without firing an event.
    """
    return b": keepalive\n\n" if id is None else f": keepalive\nid: {id}\n\n".encode()
