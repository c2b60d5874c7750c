"""Take a stream's connection over from gunicorn's gevent worker, and write to its socket.

A stream writes tens of thousands of small messages a second per process.
Handing each one back through the WSGI layers (Werkzeug's iterators,
gunicorn's response writer, gevent's ``sendall`` with its buffer-size probe)
costs several times more than the message itself.  So under gunicorn's gevent
worker ticker takes the connection over (:func:`taking_over`): once the app
has built the response, the stream writes its own status line and headers,
then its messages framed exactly as gunicorn would frame them (HTTP/1.1
chunks), and once it is caught up it is parked with the process's
``broadcast.Broadcaster``, which keeps only a small object and the socket per
client instead of a sleeping request greenlet.  gunicorn is told the request
is handled; it closes its own handle on the socket, which stays open through
ours.

Only plain HTTP/1.x over gunicorn's own socket qualifies; anything else (TLS,
HTTP/2, another server, the test client) goes through WSGI (``wsgi``).
"""

from __future__ import annotations

import _socket
import contextlib
import logging
import os
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from werkzeug.http import http_date

from ticker.stream.cursor import Subscription
from ticker.stream.slots import Slot, Writer

if TYPE_CHECKING:
    from ticker.stream.broadcast import Broadcaster

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

TAKEOVER = "ticker.takeover"  # the environ key a view sets to take its connection over
END = b"0\r\n\r\n"  # the last chunk of a chunked body


def chunk(data: bytes) -> bytes:
    """Frame ``data`` as one HTTP/1.1 chunk."""
    return b"%X\r\n%b\r\n" % (len(data), data)


def possible(environ: Mapping[str, Any]) -> bool:
    """Tell whether this request came on a plain HTTP/1.x socket of gunicorn's."""
    sock = environ.get("gunicorn.socket")
    return (
        environ.get("REQUEST_METHOD") == "GET"
        and sock is not None
        and not isinstance(sock, ssl.SSLSocket)
        and environ.get("SERVER_PROTOCOL") in ("HTTP/1.0", "HTTP/1.1")
    )


class ClientSocket:
    """The socket of a stream taken over from gunicorn, and the framing of its body."""

    __slots__ = ("chunked", "sock")

    def __init__(self, sock: _socket.socket, chunked: bool) -> None:
        self.sock = sock  # non-blocking
        self.chunked = chunked

    def frame(self, data: bytes) -> bytes:
        """Return ``data`` framed as one piece of the response body."""
        return chunk(data) if self.chunked else data

    def send_now(self, data: bytes | memoryview) -> int:
        """Write what the socket takes without waiting; return how many bytes."""
        try:
            return self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            return 0

    def send(self, data: bytes, writer: Writer) -> None:
        """Write all of ``data``, waiting cooperatively while the client is slow to read.

        While it waits, ``writer`` says since when, and the sweep may cut the
        client off: the wait then ends in an ``OSError``.
        """
        from gevent.socket import wait_write

        sent = self.send_now(data)
        if sent == len(data):
            return
        rest = memoryview(data)
        writer.since = time.monotonic()
        try:
            while sent < len(data):
                wait_write(self.sock.fileno())
                sent += self.send_now(rest[sent:])
        finally:
            writer.since = None

    def close(self, finish: bool) -> None:
        """Close the connection; with ``finish``, end the response properly first, if it fits."""
        if finish and self.chunked:
            with contextlib.suppress(OSError):
                self.send_now(END)
        self.sock.close()


@dataclass
class Takeover:
    """A stream to serve on its own socket once the app has built its response."""

    broadcaster: Broadcaster
    slot: Slot
    asked: Subscription

    def run(self, client: ClientSocket, preamble: bytes) -> None:
        """Write ``preamble`` (status line, headers) and the stream; return when parked or done."""
        self.broadcaster.open(client, preamble, self.asked, self.slot)

    def cancel(self) -> None:
        """Give up: the response turned out not to be a stream (an error page instead)."""
        self.slot.close("error")


def access_line(environ: Mapping[str, Any], request_id: str) -> Callable[[float], None]:
    """Return what logs a taken-over stream's access line when it ends, as gunicorn would."""
    query = environ.get("QUERY_STRING", "")
    path = environ.get("PATH_INFO", "")
    atoms = {
        "h": environ.get("REMOTE_ADDR") or "-",
        "m": environ.get("REQUEST_METHOD", "GET"),
        "U": path,
        "q": query,
        "r": f"GET {path}{'?' + query if query else ''} {environ.get('SERVER_PROTOCOL')}",
        "s": "200",
        "a": environ.get("HTTP_USER_AGENT") or "-",
        "{x-request-id}o": request_id,
    }

    def log(seconds: float) -> None:
        logging.getLogger("gunicorn.access").info(
            "%(r)s %(s)s", {**atoms, "M": round(seconds * 1000)}
        )

    return log


def _preamble(status: str, headers: list[tuple[str, str]], chunked: bool) -> bytes:
    ours = {"content-length", "transfer-encoding", "connection", "date"}
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers if k.lower() not in ours)]
    lines += [f"Date: {http_date()}", "Connection: close"]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def taking_over(app: WSGIApp) -> WSGIApp:
    """Wrap ``app`` so a view can take its connection over from gunicorn's gevent worker.

    The view sets ``environ[TAKEOVER]`` to a :class:`Takeover`; once the app has
    built the response (every ``after_request`` header included), its status
    line and headers go to the takeover with a duplicate of the socket.
    Reading is shut off first, so gunicorn, told the request is handled, finds
    the connection at its end and closes its own handle; the duplicate keeps
    the connection open.
    """

    def middleware(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        captured: list[Any] = []

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if environ.get(TAKEOVER) is None:
                return start_response(status, headers, exc_info)
            captured[:] = [status, headers, exc_info]
            return lambda data: None

        body = app(environ, start)
        takeover: Takeover | None = environ.get(TAKEOVER)
        if takeover is None:
            return body
        status, headers, exc_info = captured
        if not status.startswith("200 "):
            takeover.cancel()
            start_response(status, headers, exc_info)
            return body
        close = getattr(body, "close", None)
        if close is not None:
            close()
        from gunicorn.workers.base_async import ALREADY_HANDLED

        theirs = environ["gunicorn.socket"]
        try:
            ours = _socket.socket(fileno=os.dup(theirs.fileno()))
        except OSError:  # out of file descriptors: the stream never starts
            takeover.cancel()
            raise
        ours.setblocking(False)
        with contextlib.suppress(OSError):
            theirs.shutdown(socket.SHUT_RD)
        chunked = environ["SERVER_PROTOCOL"] == "HTTP/1.1"
        takeover.run(ClientSocket(ours, chunked), _preamble(status, headers, chunked))
        return ALREADY_HANDLED

    return middleware
