"""Write a stream's messages straight to the client's socket, when gunicorn serves it.

A stream writes tens of thousands of small messages a second per process.
Handing each one back through the WSGI layers (Werkzeug's iterators,
gunicorn's response writer, gevent's ``sendall`` with its buffer-size probe)
costs several times more than the message itself.  So once gunicorn has sent
the headers and the first message, the stream writes the rest itself, framed
exactly as gunicorn would frame them (HTTP/1.1 chunks), and gunicorn ends the
response when the stream ends.

Under gunicorn's gevent worker ticker goes further and takes the connection
over (``taking_over``): the stream writes its own headers, and once it is
caught up it is parked with the process's ``broadcast.Broadcaster``, which
keeps only a small object and the socket per client instead of a sleeping
request greenlet.  gunicorn is told the request is handled; it closes its own
handle on the socket, which stays open through ours.

Only plain HTTP/1.x over gunicorn's own socket qualifies; anything else (TLS,
HTTP/2, another server, the test client) goes back through WSGI as usual.
"""

from __future__ import annotations

import _socket
import contextlib
import os
import socket
import ssl
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from werkzeug.http import http_date

Send = Callable[[bytes], None]
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

TAKEOVER = "ticker.takeover"  # the environ key a view sets to take its connection over
END = b"0\r\n\r\n"  # the last chunk of a chunked body


def chunk(data: bytes) -> bytes:
    """Frame ``data`` as one HTTP/1.1 chunk."""
    return b"%X\r\n%b\r\n" % (len(data), data)


def direct(environ: Mapping[str, Any]) -> bool:
    """Tell whether this request came on a plain HTTP/1.x socket of gunicorn's."""
    sock = environ.get("gunicorn.socket")
    return (
        sock is not None
        and not isinstance(sock, ssl.SSLSocket)
        and environ.get("SERVER_PROTOCOL") in ("HTTP/1.0", "HTTP/1.1")
    )


def direct_sender(environ: Mapping[str, Any]) -> Send | None:
    """Return a function that writes one stream payload to the client, or None."""
    if not direct(environ):
        return None
    sock = environ["gunicorn.socket"]
    chunked = environ["SERVER_PROTOCOL"] == "HTTP/1.1"  # gunicorn frames these without a length
    raw = getattr(sock, "_sock", None)  # gevent's non-blocking socket underneath

    def send(data: bytes) -> None:
        if chunked:
            data = chunk(data)
        sent = 0
        if raw is not None:
            with contextlib.suppress(BlockingIOError, InterruptedError):
                sent = raw.send(data)
        if sent < len(data):  # the socket buffer is full: wait cooperatively
            sock.sendall(memoryview(data)[sent:])

    return send


def aborter(environ: Mapping[str, Any]) -> Callable[[], None]:
    """Return how to cut a stream's client off: shut its socket, waking a blocked write."""
    sock = environ.get("gunicorn.socket")

    def abort() -> None:
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    return abort


class Stalled(TimeoutError):
    """The client stopped reading: a write stayed blocked past its timeout."""


class Client:
    """The socket of a stream that ticker has taken over from gunicorn, and its framing."""

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

    def send(self, data: bytes, timeout: float) -> None:
        """Write all of ``data``, waiting cooperatively; raise Stalled after ``timeout``."""
        from gevent.socket import wait_write

        sent = self.send_now(data)
        if sent == len(data):
            return
        rest = memoryview(data)
        while sent < len(data):
            wait_write(self.sock.fileno(), timeout, Stalled(f"no write for {timeout}s"))
            sent += self.send_now(rest[sent:])

    def close(self, last: bytes = b"") -> None:
        """End the response after ``last``, as far as the socket takes it now, and close."""
        tail = (self.frame(last) if last else b"") + (END if self.chunked else b"")
        with contextlib.suppress(OSError):
            if tail:
                self.send_now(tail)
        self.sock.close()


class Takeover(Protocol):
    """What a view leaves in the environ to serve its response on the socket itself."""

    def run(self, client: Client, head: bytes) -> None:
        """Write ``head`` (status line and headers) and the stream; return when parked or done."""

    def cancel(self) -> None:
        """Give up: the response turned out not to be a stream (an error page instead)."""


def _head(status: str, headers: list[tuple[str, str]], chunked: bool) -> bytes:
    ours = {"content-length", "transfer-encoding", "connection", "date"}
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers if k.lower() not in ours)]
    lines += [f"Date: {http_date()}", "Connection: close"]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def taking_over(app: WSGIApp) -> WSGIApp:
    """Wrap ``app`` so a view can take its connection over from gunicorn's async workers.

    The view sets ``environ[TAKEOVER]``; once the app has built the response
    (every ``after_request`` header included), its status line and headers go to
    the takeover with a duplicate of the socket.  Reading is shut off first, so
    gunicorn, told the request is handled, finds the connection at its end and
    closes its own handle; the duplicate keeps the connection open.
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
        takeover.run(Client(ours, chunked), _head(status, headers, chunked))
        return ALREADY_HANDLED

    return middleware
