"""ticker's gunicorn worker: gunicorn's gevent worker, stopping as soon as it is told to.

gunicorn's ``GeventWorker`` looks at whether it should stop once a second,
and, once stopped, at whether its connections have finished once a second:
a deploy's SIGTERM cost the old process up to two seconds before it let go
of its clients, who then found no server and waited another ``retry:``.
This one looks every ``LOOK`` seconds, ends the streams as soon as it sees
the stop (every stream ends between two messages and its client reconnects
with its last id), and exits once the last connection has finished.

Under ``--reuse-port`` (two servers on one port, a deploy's overlap) gunicorn
gives each worker a listening socket of its own as soon as it is forked, and
the kernel starts handing it connections then: they waited while the app
loaded and the migrations ran, a second or more.  This worker closes that
socket at once and listens only when it is ready to serve, so until then the
connections go to the servers that can answer them.

Once it has stopped, and gunicorn's ``worker_exit`` hook has handed the
producer lease on, the process ends at once (``exit_now``) instead of going
through Python's teardown, which frees the heap object by object: with 5,000
streams that took 0.2 to 0.4 s, during which the master waits for it and a
restart's new server cannot bind the port.

Everything else (accepting, the request handling, the signals) is gunicorn's.

Importing this module loads gevent and gunicorn's worker, not the app.
"""

from __future__ import annotations

import atexit
import os
import sys
import time
from functools import partial
from typing import Any

import gevent
from gevent import socket
from gevent.pool import Pool
from gevent.server import StreamServer
from gunicorn.sock import create_sockets, ssl_context
from gunicorn.workers import ggevent

LOOK = 0.05  # seconds between two looks at the stop, then at the open connections
NOTIFY = 1.0  # seconds between two heartbeats to the master (its timeout is 30 s)


class GeventWorker(ggevent.GeventWorker):  # type: ignore[misc]  # gunicorn has no types
    """gunicorn's gevent worker that sees a SIGTERM within ``LOOK`` seconds, not one."""

    _listen_late = False  # a socket of its own (--reuse-port), opened once ready
    finished = False  # run has returned: gunicorn ends the process with status 0
    sockets: list[Any]

    def init_process(self) -> None:
        if self.cfg.reuse_port and self.sockets:
            # Created by gunicorn an instant ago; a connection in its backlog is reset.
            for listener in self.sockets:
                listener.close()
            self.sockets, self._listen_late = [], True
        super().init_process()

    def run(self) -> None:
        if self._listen_late:
            self._listeners = create_sockets(self.cfg, self.log)  # kept: they own the fds
            self.sockets = [
                socket.socket(s.FAMILY, socket.SOCK_STREAM, fileno=s.sock.fileno())
                for s in self._listeners
            ]  # gevent's sockets on them, as gunicorn's patch() makes
        servers = [self._serve(sock) for sock in self.sockets]
        self._wait(lambda: self.alive)
        self._stopping()
        for server in servers:
            server.close()  # the listener: no new connection comes to this process
        deadline = time.monotonic() + self.cfg.graceful_timeout

        def busy() -> bool:
            return any(s.pool.free_count() != s.pool.size for s in servers)

        self._wait(lambda: busy() and time.monotonic() < deadline)
        if busy():
            self.log.warning("Worker graceful timeout (pid:%s)", self.pid)
            for server in servers:
                server.stop(timeout=1)
        self.finished = True

    def exit_now(self) -> None:
        """End the finished process with status 0, without Python's teardown.

        Called last, from gunicorn's ``worker_exit`` hook: the connections are
        closed, the lease handed on and the metrics written by then.  What
        would still run at exit runs here: the ``atexit`` functions (logging's
        flush among them) and the flush of the standard streams.
        """
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(0)

    def _serve(self, sock: Any) -> StreamServer:
        """Start accepting on ``sock``, each connection handled by gunicorn in a greenlet."""
        sock.setblocking(1)
        ssl = {"ssl_context": ssl_context(self.cfg)} if self.cfg.is_ssl else {}
        server = StreamServer(
            sock, handle=partial(self.handle, sock), spawn=Pool(self.worker_connections), **ssl
        )
        if self.cfg.workers > 1:
            server.max_accept = 1  # leave the next connection to a worker that is less busy
        server.start()
        return server

    def _wait(self, condition: Any) -> None:
        """Look at ``condition`` every ``LOOK`` seconds while it holds, beating the heart."""
        beat = 0.0
        while condition():
            if time.monotonic() >= beat:
                self.notify()
                beat = time.monotonic() + NOTIFY
            gevent.sleep(LOOK)

    def _stopping(self) -> None:
        """End the app's streams now, so that the open connections finish."""
        from ticker import lifecycle
        from ticker.gunicorn_conf import app_state

        state = app_state(self)
        if state is not None:
            lifecycle.end_streams(state)
