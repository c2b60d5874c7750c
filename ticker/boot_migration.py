"""The migrations of a gunicorn start, run only when a worker finds the database behind.

A deploy's restart is usually a start on a database already at this code's
newest migration: each worker, once it has loaded the app, looks (a read of
the schema's version, ``cli.at_head``) and serves at once.  Only a worker that
finds the database behind, or cannot tell (it does not answer, or on
PostgreSQL a migration elsewhere holds the version), asks the master for
them, and waits for their outcome (``Migration.wait``) before it touches the
database.  The master runs them once, in a process of its own (it must not
import the app's stack, see ``gunicorn_conf``): ``ticker db upgrade``, which
waits its turn when another process migrates the same database.

How they talk: a pipe made before the first fork, on which a worker writes
a byte to ask; and a file of this start (``path``) to which the master's
thread writes ``done`` or ``failed`` once the migrations' process ended.  The
outcome comes from what the process printed, not from its exit status,
because gunicorn's master reaps every child that exits, this one too, and a
status reaped by another is read as 0.  A worker that finds ``failed`` exits
with gunicorn's boot-error status, and gunicorn halts ("Worker failed to
boot", exit 3).

Importing this module loads nothing beyond the standard library.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger("ticker.gunicorn")

DONE, FAILED = "done", "failed"
MARK = "ticker: migrations done"  # the process's last line of output, once it succeeded
BOOT_ERROR = 3  # gunicorn's Arbiter.WORKER_BOOT_ERROR: the master halts with it
LOOK = 0.02  # seconds between a waiting worker's looks at the outcome
THREAD = "ticker-migrations"  # the master's thread that runs them when asked
VERSION_WAIT = 2.0  # seconds a worker waits for the schema's version before it asks


class Migration:
    """One start's migrations: asked for by a worker, run by the master, awaited by the workers."""

    def __init__(self) -> None:
        fd, name = tempfile.mkstemp(prefix="ticker-migration-")
        os.close(fd)
        self.path = Path(name)  # empty until they have run
        self._asked, self._ask = os.pipe()  # inherited by every worker forked later

    def start(self) -> None:
        """Wait, in a thread of the master, for a worker to ask for the migrations; run them."""
        threading.Thread(target=self._run_when_asked, name=THREAD, daemon=True).start()

    def _run_when_asked(self) -> None:
        # The wait may last as long as the master: no signal may be delivered to this
        # thread meanwhile, where it would not wake gunicorn's main thread (which runs
        # the handlers) until its next timeout.  The migrations' process gets the usual mask.
        usual = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        os.read(self._asked, 1)  # once: the workers that ask later wait for the same outcome
        signal.pthread_sigmask(signal.SIG_SETMASK, usual)
        command = [sys.executable, "-c", _UPGRADE, MARK]
        child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        self._note(child)

    def _note(self, child: subprocess.Popen[str]) -> None:
        assert child.stdout is not None
        lines = child.stdout.read().splitlines()
        child.stdout.close()
        for line in lines:
            if line != MARK:
                print(line)  # what the migrations printed, in the server's output
        outcome = DONE if lines and lines[-1] == MARK else FAILED
        if outcome == FAILED:
            logger.error("the migrations failed, see above: the workers will not start")
        self.path.write_text(outcome)

    def wait(self, worker: Any, at_head: Callable[[], bool]) -> bool:
        """In a booting worker, make sure the database is migrated; tell whether it may start.

        ``at_head`` tells whether the database is at this code's newest
        migration.  When it is not, the worker asks the master for the
        migrations and waits for their outcome.  When they failed (the master
        has said why), one worker exits with gunicorn's boot-error status, so
        gunicorn halts, and the others wait to be stopped.  Keeps telling the
        master the worker is alive meanwhile (a migration that waits for a lock
        may take longer than gunicorn's worker timeout).  Returns False when
        the worker was stopped before it could start.
        """
        if not self.path.read_text():
            if _answered_within(worker, VERSION_WAIT, at_head):
                return True
            if not worker.alive:
                return False  # stopped meanwhile: no migrations asked for
            os.write(self._ask, b"!")
        _alive_while(worker, lambda: not self.path.read_text())
        outcome = self.path.read_text()
        if outcome == DONE:
            return True
        if outcome == FAILED and self._first_to_fail():
            raise SystemExit(BOOT_ERROR)
        _alive_while(worker, lambda: True)  # until the master, halting, stops it
        return False

    def _first_to_fail(self) -> bool:
        """Tell whether this worker is the one to exit with the boot error.

        One only: gunicorn halts on the first, and a second one's, reaped while
        it halts, would raise out of its halt (the master then exits 1, not 3).
        """
        try:
            os.close(os.open(self._halting, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        return True

    @property
    def _halting(self) -> str:
        return f"{self.path}.halting"

    def remove(self) -> None:
        """Delete the outcome's files (the master, on exit)."""
        self.path.unlink(missing_ok=True)
        Path(self._halting).unlink(missing_ok=True)


def _answered_within(worker: Any, seconds: float, check: Callable[[], bool]) -> bool:
    """Run ``check`` in a thread of its own; tell whether it said True within ``seconds``.

    A database that does not answer (a host gone: a connect can hang for
    minutes) must not hold the worker without a heartbeat, nor keep the
    migrations, which then fail and say why, from being asked for.
    """
    said: list[bool] = []
    thread = threading.Thread(target=lambda: said.append(check()), daemon=True)
    thread.start()
    end = time.monotonic() + seconds
    _alive_while(worker, lambda: thread.is_alive() and time.monotonic() < end)
    return said == [True]


def _alive_while(worker: Any, condition: Callable[[], bool]) -> None:
    """Look at ``condition`` every ``LOOK`` seconds while it holds and the worker runs."""
    while worker.alive and condition():
        worker.notify()
        time.sleep(LOOK)


# ``ticker db upgrade``, then the mark, printed only when the command succeeded.  A
# server stopped while they run lets them finish (SQLite's DDL is not transactional).
_UPGRADE = """
import sys
from ticker.cli import main
try:
    main(["db", "upgrade"])
except SystemExit as end:
    if not end.code:
        try:
            print(sys.argv[1], flush=True)
        except BrokenPipeError:  # the server stopped meanwhile: nobody waits for the mark
            sys.stdout = None
    raise
"""
