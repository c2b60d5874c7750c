"""What one app holds: every stateful part, built once by ``create_app``, typed."""

from __future__ import annotations

import threading
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


@dataclass(eq=False)
class AppState:
    """The settings and the stateful parts of one app, kept in ``app.extensions["ticker"]``.

    ``scheduler`` and ``started`` belong to the process's lifecycle (``lifecycle``),
    which ``lock`` serialises.
    """

    settings: Settings
    engine: Engine
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


def app_state(app: Flask | None = None) -> AppState:
    """Return the state of ``app``, or of the current app."""
    state: AppState = (app or current_app).extensions[KEY]
    return state
