"""What one app holds: every stateful part, built once by ``create_app``, typed."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from apscheduler.schedulers.base import BaseScheduler
from flask import Flask, current_app
from sqlalchemy import Engine

from ticker.config import Settings
from ticker.follower import Follower
from ticker.hub import Hub
from ticker.metrics import MeteredProducer, MeteredStreams, Metrics
from ticker.stream import Broadcaster

KEY = "ticker"  # in app.extensions


class WriteHealth:
    """Whether this process's appends through the API succeed, for ``/healthz``.

    A failed append (a full disk, a read-only file or database, a lock that
    never came) marks the write side failing, with its cause and since when,
    until the next append succeeds.
    """

    def __init__(self) -> None:
        self.failed = 0  # appends that failed, ever
        self.failing_since: float | None = None  # wall clock of the first failure in a row
        self.cause: str | None = None

    def failure(self, cause: str) -> None:
        """Note a failed append and why."""
        self.failed += 1
        self.cause = cause
        if self.failing_since is None:
            self.failing_since = time.time()

    def success(self) -> None:
        """Note an append that committed: the write side works again."""
        self.failing_since = self.cause = None

    @property
    def failing(self) -> bool:
        """Tell whether the last append failed."""
        return self.failing_since is not None


@dataclass(eq=False)
class AppState:
    """The settings and the stateful parts of one app, kept in ``app.extensions["ticker"]``.

    ``scheduler`` and ``started`` belong to the process's lifecycle (``lifecycle``),
    which ``lock`` serialises.
    """

    settings: Settings
    engine: Engine  # the API, the producer, the follower, health and metrics
    stream_engine: Engine  # the streams' reads of the log only: a pool of its own
    hub: Hub
    follower: Follower
    streams: MeteredStreams
    producer: MeteredProducer
    broadcaster: Broadcaster
    metrics: Metrics
    cors_origins: tuple[str, ...]
    scheduler: BaseScheduler | None = None
    started: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    writes: WriteHealth = field(default_factory=WriteHealth)


def app_state(app: Flask | None = None) -> AppState:
    """Return the state of ``app``, or of the current app."""
    state: AppState = (app or current_app).extensions[KEY]
    return state
