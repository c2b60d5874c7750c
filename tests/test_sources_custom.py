"""Your own source: TICKER_SOURCE=python:MODULE:NAME, and the README's example as written."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from tests.fakes import Clock, FakeExchange, log_rows, ok, stop
from ticker import ROOT
from ticker.errors import ConfigError
from ticker.state import app_state


def readme_example() -> str:
    """Return the README's own-source example, as a user would copy it."""
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"```python\n(# myquotes\.py.*?)```", readme, re.S)
    assert found, "the README lost its own-source example"
    return found.group(1)


@pytest.fixture
def custom_app(
    make_app: Callable[..., Flask], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Flask]]:
    """Build apps that may import modules written to the test's directory."""
    monkeypatch.syspath_prepend(str(tmp_path))
    apps: list[Flask] = []

    def build(**config: Any) -> Flask:
        app = make_app(**{"symbols": "BTC-USD,ETH-USD", **config})
        apps.append(app)
        return app

    yield build
    for app in apps:
        stop(app)


def test_the_readme_example_works_as_written(
    custom_app: Any, exchange: FakeExchange, tmp_path: Path
) -> None:
    (tmp_path / "myquotes.py").write_text(readme_example())
    app = custom_app(source="python:myquotes:MyQuotes", source_url=exchange.url)
    producer = app_state(app).producer
    producer.clock = Clock()
    exchange.script(
        "/latest",
        ok('{"BTC-USD": "67012.35", "ETH-USD": 3456.780, "XRP-USD": "0.5"}'),
        ok({"message": "down"}, 500),
        ok({"BTC-USD": "67012.40"}),
    )
    assert len(producer.produce()) == 2
    producer.clock.now += 1
    assert producer.produce() == []
    assert "500" in (producer.state.last_error or "")
    producer.clock.now += 1
    assert len(producer.produce()) == 1
    assert log_rows(app) == [
        ("BTC-USD", "67012.35"),
        ("ETH-USD", "3456.780"),
        ("BTC-USD", "67012.40"),
    ]
    assert producer.state.errors == 1
    assert producer.lease_ttl >= 1 + 2 * 2.0  # it declared a 2 s timeout


def test_a_factory_function_gets_the_settings(custom_app: Any, tmp_path: Path) -> None:
    (tmp_path / "fixed.py").write_text(
        "from ticker.sources import Source, Tick\n"
        "class Fixed(Source):\n"
        "    def __init__(self, symbols):\n"
        "        self.symbols = symbols\n"
        "    def next_ticks(self, now_us):\n"
        "        return [Tick(s, '1.00', now_us) for s in self.symbols]\n"
        "def make(settings):\n"
        "    return Fixed(settings.symbols[:1])\n"
    )
    app = custom_app(source="python:fixed:make")
    app_state(app).producer.produce()
    assert log_rows(app) == [("BTC-USD", "1.00")]
    assert app.test_client().get("/healthz").get_json()["producer"]["source"] == (
        "python:fixed:make"
    )


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("no_such_module_here:Source", "cannot import no_such_module_here"),
        ("json:NoSuchThing", "json has no NoSuchThing"),
        ("math:pi", "pi is not callable"),
        ("builtins:str", "gave a str, not a Source"),
        ("decimal:Decimal", "Decimal.settings. failed: TypeError"),
    ],
)
def test_a_source_that_cannot_be_built_stops_start_up(
    custom_app: Any, target: str, reason: str
) -> None:
    with pytest.raises(ConfigError, match=reason) as caught:
        custom_app(source=f"python:{target}")
    assert caught.value.variable == "TICKER_SOURCE"
