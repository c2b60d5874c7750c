"""The reference point of docs/benchmarks.md: a plain Flask + gevent fan-out with no log.

Issue 5 gives figures for this design, measured once on this kind of machine.
Running it here, with the same method and on the same day as ticker, keeps
the comparison fair on a VM whose speed drifts.  The design is the usual one:
one gevent queue per client, each event encoded once, and whatever a client's
queue holds sent in one write.  Nothing is stored, so there is no replay.

It speaks just enough of ticker's wire format for ``ticker loadtest``:
``POST /api/ticks`` answers with the new ids, and ``/stream`` opens with a
``snapshot`` frame naming the head, then sends ``tick`` frames.  Serve it with
``gunicorn -k gevent -w 1 --worker-connections 19000 --chdir docs reference_fanout:app``
(``docs/benchmark.py`` does).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from flask import Flask, Response, request
from gevent.queue import Empty, Queue

app = Flask(__name__)
subscribers: dict[Queue[bytes], frozenset[str]] = {}
head = 0


@app.get("/healthz")
def health() -> dict[str, Any]:
    return {"status": "ok", "head": head, "streams": len(subscribers)}


@app.post("/api/ticks")
def publish() -> tuple[dict[str, Any], int]:
    global head
    body = request.get_json()
    ids = []
    for item in body if isinstance(body, list) else [body]:
        head += 1
        data = {"id": head, "symbol": item["symbol"], "price": item["price"], "ts": item["ts"]}
        frame = f"id: {head}\nevent: tick\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
        encoded = frame.encode()  # once, for every client
        for queue, wanted in subscribers.items():
            if item["symbol"] in wanted:
                queue.put(encoded)
        ids.append(head)
    return {"ids": ids}, 201


@app.get("/stream")
def stream() -> Response:
    wanted = frozenset(request.args.get("symbols", "").split(","))

    def frames() -> Iterator[bytes]:
        queue: Queue[bytes] = Queue()
        subscribers[queue] = wanted  # before the head is read: no tick falls in between
        try:
            yield f"retry: 1000\n\nid: {head}\nevent: snapshot\ndata: {{}}\n\n".encode()
            while True:
                try:
                    backlog = [queue.get(timeout=15)]
                except Empty:
                    yield b": keepalive\n\n"
                    continue
                while not queue.empty():
                    backlog.append(queue.get_nowait())
                yield b"".join(backlog)
        finally:
            del subscribers[queue]

    return Response(frames(), mimetype="text/event-stream", headers={"Cache-Control": "no-cache"})
