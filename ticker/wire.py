"""Write a stream's messages straight to the client's socket, when gunicorn serves it.

A stream writes tens of thousands of small messages a second per process.
Handing each one back through the WSGI layers (Werkzeug's iterators,
gunicorn's response writer, gevent's ``sendall`` with its buffer-size probe)
costs several times more than the message itself.  So once gunicorn has sent
the headers and the first message, the stream writes the rest itself, framed
exactly as gunicorn would frame them (HTTP/1.1 chunks), and gunicorn ends the
response when the stream ends.

Only plain HTTP/1.x over gunicorn's own socket qualifies; anything else (TLS,
HTTP/2, another server, the test client) goes back through WSGI as usual.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Callable, Mapping
from typing import Any

Send = Callable[[bytes], None]


def direct_sender(environ: Mapping[str, Any]) -> Send | None:
    """Return a function that writes one stream payload to the client, or None."""
    sock = environ.get("gunicorn.socket")
    protocol = environ.get("SERVER_PROTOCOL")
    if sock is None or isinstance(sock, ssl.SSLSocket) or protocol not in ("HTTP/1.0", "HTTP/1.1"):
        return None
    chunked = protocol == "HTTP/1.1"  # gunicorn frames HTTP/1.1 bodies without a length
    raw = getattr(sock, "_sock", None)  # gevent's non-blocking socket underneath

    def send(data: bytes) -> None:
        if chunked:
            data = b"%X\r\n%b\r\n" % (len(data), data)
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
