"""ticker: a stock/crypto ticker on a replayable event log, streamed as SSE.

Importing the package loads nothing else: gunicorn's master reads
``ticker.gunicorn_conf`` before any worker imports the app (and
``prometheus_client``, which picks its multiprocess mode when first imported).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parent.parent

if TYPE_CHECKING:
    from ticker.app import create_app

__all__ = ["ROOT", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from ticker.app import create_app

        return create_app
    raise AttributeError(f"module 'ticker' has no attribute {name!r}")
