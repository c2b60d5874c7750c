"""Debian's chromium, headless, driven by playwright: one launcher for the browser tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.servers import require_server_mark

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def chromium(profile: Path, **options: Any) -> Iterator[Any]:
    """Yield a fresh persistent chromium context on ``profile``; skip when it cannot run."""
    require_server_mark("chromium")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium package (make test does)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        try:
            context = playwright.chromium.launch_persistent_context(
                str(profile),
                executable_path=str(CHROMIUM),
                headless=True,
                args=CHROMIUM_ARGS,
                **options,
            )
        except sync_api.Error as exc:
            pytest.skip(f"{CHROMIUM} does not start: {str(exc).splitlines()[0]}")
        context.set_default_timeout(15_000)
        try:
            yield context
        finally:
            context.close()
