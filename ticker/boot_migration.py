"""The migrations of a gunicorn start, run beside the workers' own start.

gunicorn's master starts them once it listens (``when_ready``), in a process
of their own (the master must not import the app's stack, see
``gunicorn_conf``), and forks the workers at once: a worker loads the app
while the migrations run, and waits for them (``Migration.wait``) before it
touches the database.  A deploy's restart answers that much sooner.

How a worker learns the outcome: the master's thread reads the migration
process's output to its end and writes ``done`` or ``failed`` to a file of
this start (``path``); workers, forked before or after, look at it.  The
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


class Migration:
    """One start's migrations: started by the master, awaited by each worker."""

    def __init__(self) -> None:
        fd, name = tempfile.mkstemp(prefix="ticker-migration-")
        os.close(fd)
        self.path = Path(name)  # empty while they run

    def start(self) -> None:
        """Run ``ticker db upgrade`` in a process of its own; note its outcome when it ends."""
        command = [sys.executable, "-c", _UPGRADE, MARK]
        child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self._note, args=(child,), daemon=True).start()

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

    def wait(self, worker: Any) -> bool:
        """Wait for the outcome in a booting worker; tell whether it may start.

        When the migrations failed (the master has said why), one worker exits
        with gunicorn's boot-error status, so gunicorn halts, and the others
        wait to be stopped.  Keeps telling the master the worker is alive
        meanwhile (a migration that waits for a lock may take longer than
        gunicorn's worker timeout).  Returns False when the worker was stopped
        before it could start.
        """
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
