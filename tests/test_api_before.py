"""GET /api/ticks?before=ID: the newest page of one symbol below an id, for back-fill."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from tests.fakes import TOKEN
from ticker import lifecycle
from ticker.state import app_state

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(make_app: Callable[..., Flask]) -> Iterator[Any]:
    app = make_app(symbols="BTC-USD,AAPL")
    yield app.test_client()
    lifecycle.stop(app_state(app))


def publish(client: Any, ticks: list[dict[str, str]]) -> list[int]:
    response = client.post(
        "/api/ticks", data=json.dumps(ticks), headers=AUTH, content_type="application/json"
    )
    assert response.status_code == 201, response.get_json()
    ids: list[int] = response.get_json()["ids"]
    return ids


@pytest.fixture
def ids(client: Any) -> dict[str, list[int]]:
    """Interleave 12 BTC-USD and 6 AAPL ticks; return each symbol's ids."""
    got = publish(
        client,
        [{"symbol": "BTC-USD" if i % 3 else "AAPL", "price": f"{100 + i}.5"} for i in range(18)],
    )
    return {
        "BTC-USD": [i for n, i in enumerate(got) if n % 3],
        "AAPL": [i for n, i in enumerate(got) if not n % 3],
    }


def page(client: Any, query: str) -> Any:
    response = client.get(f"/api/ticks?{query}")
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_before_gives_the_newest_ticks_below_it_in_ascending_order(
    client: Any, ids: dict[str, list[int]]
) -> None:
    btc = ids["BTC-USD"]
    got = page(client, f"symbol=BTC-USD&before={btc[9]}&limit=4")
    assert [t["id"] for t in got["ticks"]] == btc[5:9]
    assert {t["symbol"] for t in got["ticks"]} == {"BTC-USD"}
    assert got["next_before"] == btc[5]


def test_before_pages_backwards_through_the_whole_symbol(
    client: Any, ids: dict[str, list[int]]
) -> None:
    pages: list[list[int]] = []
    before: int | None = ids["AAPL"][-1] + 1
    while before is not None:
        got = page(client, f"symbol=aapl&before={before}&limit=4")
        pages.append([t["id"] for t in got["ticks"]])
        before = got["next_before"]
    assert pages == [ids["AAPL"][2:], ids["AAPL"][:2]]


def test_before_above_the_head_gives_the_latest_and_null_when_not_full(
    client: Any, ids: dict[str, list[int]]
) -> None:
    got = page(client, "symbol=AAPL&before=1000000")
    assert [t["id"] for t in got["ticks"]] == ids["AAPL"]
    assert got["next_before"] is None


def test_before_combines_with_after_as_an_open_interval(
    client: Any, ids: dict[str, list[int]]
) -> None:
    btc = ids["BTC-USD"]
    got = page(client, f"symbol=BTC-USD&after={btc[2]}&before={btc[6]}&limit=100")
    assert [t["id"] for t in got["ticks"]] == btc[3:6]


def test_before_the_first_id_is_empty(client: Any, ids: dict[str, list[int]]) -> None:
    assert page(client, "symbol=BTC-USD&before=0") == {"ticks": [], "next_before": None}
    assert page(client, f"symbol=BTC-USD&before={ids['BTC-USD'][0]}")["ticks"] == []


def test_without_before_the_answer_is_unchanged(client: Any, ids: dict[str, list[int]]) -> None:
    got = page(client, "symbol=AAPL&limit=4")
    assert [t["id"] for t in got["ticks"]] == ids["AAPL"][:4]
    assert got["next_after"] == ids["AAPL"][3]
    assert "next_before" not in got


@pytest.mark.parametrize("value", ["-1", "abc", "1.5", "9223372036854775808"])
def test_a_bad_before_is_400(client: Any, value: str) -> None:
    response = client.get(f"/api/ticks?symbol=AAPL&before={value}")
    assert response.status_code == 400
    assert "before" in response.get_json()["error"]
