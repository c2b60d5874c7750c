"""A small SSE client over real HTTP, written to the WHATWG parsing rules."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Message:
    """One dispatched SSE frame (an event, or an id/comment-only frame)."""

    event: str | None = None
    data: str | None = None
    id: str | None = None
    retry: int | None = None
    comments: list[str] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.data or "null")


class SSEStream:
    """Open ``url`` and read its frames; ``last_event_id`` tracks ids like a browser."""

    def __init__(
        self,
        url: str,
        headers: dict[str, str] | None = None,
        timeout: float = 10,
        receive_buffer: int | None = None,
    ):
        """Open the stream; ``receive_buffer`` shrinks the socket's buffer and its
        segments, so a client that pauses reading holds the server up after some
        kilobytes (the server's send buffer grows with the segment size)."""
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        if receive_buffer is not None:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)  # before connect
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
            sock.settimeout(timeout)
            sock.connect((parts.hostname, parts.port))
            self.conn.sock = sock
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        self.conn.request("GET", path, headers={"Accept": "text/event-stream", **(headers or {})})
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.headers = self.response.headers
        self.last_event_id: str | None = None

    def frames(self) -> Iterator[Message]:
        """Yield each frame up to the end of the stream."""
        message = Message()
        seen = False
        while True:
            raw = self.response.readline()
            if not raw:
                return
            line = raw.decode().rstrip("\r\n")
            if line == "":
                if seen:
                    if message.id is not None:
                        self.last_event_id = message.id
                    yield message
                message, seen = Message(), False
                continue
            seen = True
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "":
                message.comments.append(value)
            elif name == "event":
                message.event = value
            elif name == "data":
                message.data = value if message.data is None else message.data + "\n" + value
            elif name == "id":
                message.id = value
            elif name == "retry" and value.isdigit():
                message.retry = int(value)

    def ticks_until(self, predicate: Any, deadline: float = 20.0) -> list[Message]:
        """Read frames until ``predicate(frame)`` holds; return all frames read."""
        end = time.monotonic() + deadline
        got = []
        for frame in self.frames():
            got.append(frame)
            if predicate(frame):
                return got
            if time.monotonic() > end:
                break
        raise AssertionError(f"condition not met within {deadline}s; read {len(got)} frames")

    def close(self) -> None:
        # A "Connection: close" response owns the socket: closing the connection alone
        # would leave it open.
        self.response.close()
        self.conn.close()

    def __enter__(self) -> SSEStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
