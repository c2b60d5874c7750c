"""The ticker page as a test drives it: one chromium page, and what it holds and shows.

Shared by the page tests; the ``browser`` fixture (in conftest) makes a :class:`Browser`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fakes import eventually, log_ids
from tests.servers import Server


class Browser:
    """One page of a fresh chromium profile, recording script errors and CSP violations."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.problems: list[str] = []
        self.dialogs: list[str] = []
        page.on("pageerror", lambda exc: self.problems.append(f"script error: {exc}"))
        page.on("console", self._console)
        page.on("dialog", self._dialog)

    def _console(self, message: Any) -> None:
        if "Content Security Policy" in message.text:
            self.problems.append(f"CSP violation: {message.text}")

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def state(self, name: str) -> Any:
        return self.page.evaluate(f"() => window.tickerState && window.tickerState.{name}")

    def ids(self, symbol: str) -> list[int] | None:
        ids: list[int] | None = self.page.evaluate(
            "(s) => window.tickerState && window.tickerState.ids(s)", symbol
        )
        return ids

    def connection(self) -> str | None:
        state: str | None = self.page.get_attribute("#conn", "data-state")
        return state

    def wait_connection(self, state: str, timeout: float = 15) -> None:
        eventually(lambda: self.connection() == state, f"connection state {state!r}", timeout)

    def rows(self) -> list[str]:
        rows: list[str] = self.page.locator("#board .row .sym").all_text_contents()
        return rows

    def row_text(self, symbol: str, part: str) -> str:
        text: str = self.page.evaluate(
            """([symbol, part]) => {
                const row = [...document.querySelectorAll("#board .row")]
                    .find((r) => r.querySelector(".sym").textContent === symbol);
                return row ? row.querySelector("." + part).textContent : null;
            }""",
            [symbol, part],
        )
        return text

    def url_symbols(self) -> list[str]:
        query = parse_qs(urlsplit(self.page.url).query)
        return query["symbols"][0].split(",") if "symbols" in query else []

    def wait_chart_matches_log(self, db_url: str, symbol: str, timeout: float = 20) -> list[int]:
        """Wait until the page's chart of ``symbol`` holds exactly the log's ids of it."""

        def same() -> list[int] | None:
            held = self.ids(symbol)
            return held if held and held == log_ids(db_url, [symbol]) else None

        try:
            return eventually(same, f"chart of {symbol} equal to the log", timeout)
        except AssertionError:
            held, logged = self.ids(symbol) or [], log_ids(db_url, [symbol])
            missing = sorted(set(logged) - set(held))[:20]
            extra = sorted(set(held) - set(logged))[:20]
            raise AssertionError(
                f"{symbol}: page holds {len(held)} ids, log {len(logged)}; "
                f"missing {missing}, not in log {extra}, "
                f"in order {held == sorted(held)}, unique {len(held) == len(set(held))}"
            ) from None


def open_page(browser: Browser, server: Server, query: str) -> None:
    browser.page.goto(f"{server.base}/{query}")
    browser.wait_connection("live")


def kill_hard(server: Server) -> None:
    """SIGKILL the gunicorn master and each of its workers, by PID, and wait for the port."""
    workers = server.worker_pids()
    os.kill(server.proc.pid, signal.SIGKILL)
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):  # it may have exited with the master
            os.kill(pid, signal.SIGKILL)
    server.proc.wait(10)

    def port_closed() -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", server.port)) != 0

    eventually(port_closed, f"port {server.port} closed after SIGKILL", 10)
