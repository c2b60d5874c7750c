"""Logging: one line per record, as ``key=value`` text or JSON, for ticker and gunicorn.

:class:`~ticker.config.LogSettings` (``TICKER_LOG_LEVEL``, ``TICKER_LOG_FORMAT``
``text`` or ``json``, read and checked in :mod:`ticker.config`) chooses the level
and the shape; ``gunicorn_conf`` hands gunicorn the same dictionary, so its own
lines look like ours.  ``TICKER_ACCESS_LOG=true`` adds a line per request (off
by default: the proxy in front usually keeps one).  Fields passed
as ``extra=`` (``request_id``, ``symbols`` ...) become keys of the line.
Newlines, also a traceback's, are escaped, so every record stays on one line.

No secrets: this module never reads request headers.  Only what a caller
passes in ``extra`` is logged (no caller passes the publish token or the
``Authorization`` header), and of gunicorn's access atoms, which hold every
request header, only the named fields below.
"""

from __future__ import annotations

import errno
import json
import logging
import logging.config
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from gunicorn import glogging

from ticker.config import LogSettings

# What every LogRecord carries; anything else on a record came in through ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
_BARE = re.compile(r"^[^\s\"=\\]+$")


def _time(record: logging.LogRecord) -> str:
    stamp = datetime.fromtimestamp(record.created, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


# gunicorn's access record carries every request header among its atoms
# (``Authorization`` too): only these are ever logged.
_ACCESS_FIELDS = {
    "remote": "h",
    "method": "m",
    "path": "U",
    "query": "q",
    "status": "s",
    "bytes": "B",
    "ms": "M",
    "request_id": "{x-request-id}o",
    "user_agent": "a",
}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _message(record: logging.LogRecord) -> tuple[str, dict[str, Any]]:
    """Return the record's message and fields; gunicorn's access lines become fields."""
    if record.name == "gunicorn.access" and isinstance(record.args, Mapping):
        atoms = record.args
        fields = {name: atoms.get(atom) for name, atom in _ACCESS_FIELDS.items()}
        return "request", {k: v for k, v in fields.items() if v not in (None, "", "-")}
    return record.getMessage(), _extras(record)


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object: ts, level, logger, pid, msg, the extras, exc."""

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as one line of JSON."""
        message, fields = _message(record)
        line: dict[str, Any] = {
            "ts": _time(record),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "msg": message,
        }
        line.update(fields)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str)


def _value(value: Any) -> str:
    text = str(value)
    return text if _BARE.match(text) else json.dumps(text)


class TextFormatter(logging.Formatter):
    """Format a record as ``time LEVEL [pid] logger: message key=value ...`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as one line of text."""
        message, fields = _message(record)
        message = message.replace("\\", "\\\\").replace("\n", "\\n")
        parts = [f"{_time(record)} {record.levelname} [{record.process}] {record.name}: {message}"]
        parts += [f"{k}={_value(v)}" for k, v in fields.items()]
        if record.exc_info:
            parts.append(f"exc={json.dumps(self.formatException(record.exc_info))}")
        if record.stack_info:
            parts.append(f"stack={json.dumps(self.formatStack(record.stack_info))}")
        return " ".join(parts)


def logging_config(settings: LogSettings) -> dict[str, Any]:
    """Return the ``dictConfig`` of a process that logs as ``settings`` say."""
    level = settings.level
    access = settings.access_log
    formatter = JsonFormatter if settings.format == "json" else TextFormatter
    quiet = "WARNING" if level in ("DEBUG", "INFO") else level
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"line": {"()": f"{__name__}.{formatter.__name__}"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "line",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            # gunicorn's own handlers go; its records reach the root's, in our format.
            "gunicorn.error": {"level": level, "handlers": [], "propagate": True},
            "gunicorn.access": {
                "level": "INFO" if access else "CRITICAL",
                "handlers": [],
                "propagate": True,
            },
            "apscheduler": {"level": quiet},
            "alembic.runtime.plugins": {"level": quiet},  # a line per plugin it loads
        },
    }


class GunicornLogger(glogging.Logger):  # type: ignore[misc]
    """gunicorn's logger, which builds a request's access atoms only when they are logged.

    With a ``logconfig_dict`` gunicorn builds them for every request, even when
    ``gunicorn.access`` drops the record (``TICKER_ACCESS_LOG`` off): a tenth
    of a small request's time.
    """

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        """Log the request when ``gunicorn.access`` takes INFO records."""
        if self.access_log.isEnabledFor(logging.INFO):
            super().access(resp, req, environ, request_time)

    def exception(self, msg: str, *args: Any, **kwargs: Any) -> None:
        """Log an error with its traceback, but a stopping worker's closed listener at INFO.

        A connection the gevent worker accepted just before it stopped
        listening (every deploy's SIGTERM, while clients reconnect) fails in
        ``listener.getsockname()`` with EBADF, and gunicorn logs that as an
        ERROR with a traceback (benoitc/gunicorn#712).  Nothing went wrong:
        gunicorn closes the connection and its client reconnects elsewhere.
        """
        error = sys.exc_info()[1]
        if _closed_listener(error):
            self.info("closed a connection accepted as the worker stopped listening")
            return
        super().exception(msg, *args, **kwargs)


def _closed_listener(error: BaseException | None) -> bool:
    """Tell whether ``error`` is EBADF raised from a listening socket's ``getsockname``."""
    if not isinstance(error, OSError) or error.errno != errno.EBADF:
        return False
    frame = error.__traceback__
    while frame is not None:
        if frame.tb_frame.f_code.co_name == "getsockname":
            return True
        frame = frame.tb_next
    return False


def configure(settings: LogSettings) -> None:
    """Set up this process's logging as ``settings`` say."""
    logging.config.dictConfig(logging_config(settings))
