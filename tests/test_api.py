"""The JSON API through Flask's test client: symbols, snapshot, pages, publishing, health."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from tests.fakes import TOKEN
from ticker import create_app, lifecycle, log
from ticker.events import format_ts, now_us
from ticker.state import app_state

AUTH = {"Authorization": f"Bearer {TOKEN}"}
TS = "2026-11-21T10:00:00.000000Z"


def post(client: Any, body: Any, headers: dict[str, str] | None = None) -> Any:
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(
        "/api/ticks",
        data=data,
        headers=AUTH if headers is None else headers,
        content_type="application/json",
    )


def publish(client: Any, body: Any) -> list[int]:
    response = post(client, body)
    assert response.status_code == 201, response.get_json()
    ids: list[int] = response.get_json()["ids"]
    return ids


def head(app: Flask) -> int:
    return log.head(app_state(app).engine)


def test_symbols_lists_each_tracked_symbol_with_its_latest_tick(make_app: Any) -> None:
    app = make_app(symbols="BTC-USD,AAPL,ETH-USD")
    client = app.test_client()
    publish(client, [{"symbol": "BTC-USD", "price": "1.00", "ts": TS}])
    publish(client, [{"symbol": "AAPL", "price": "230.10", "ts": TS}])
    publish(client, [{"symbol": "BTC-USD", "price": "2.00", "ts": TS}])
    response = client.get("/api/symbols")
    assert response.status_code == 200
    btc = {"id": 3, "symbol": "BTC-USD", "price": "2.00", "ts": TS}
    aapl = {"id": 2, "symbol": "AAPL", "price": "230.10", "ts": TS}
    # TS is long past: no statistics over the last 24 hours, and every symbol is stale
    # (no source, so no market is closed).
    quiet = {"stats": None, "stale": True, "closed": False}
    assert response.get_json() == {
        "symbols": [
            {"symbol": "BTC-USD", "tick": btc, **quiet},
            {"symbol": "AAPL", "tick": aapl, **quiet},
            {"symbol": "ETH-USD", "tick": None, **quiet},
        ]
    }


def test_snapshot_gives_the_head_and_latest_ticks(make_app: Any) -> None:
    app = make_app(symbols="BTC-USD,AAPL,ETH-USD")
    client = app.test_client()
    assert client.get("/api/snapshot").get_json() == {"head": 0, "ticks": []}
    publish(
        client,
        [
            {"symbol": "BTC-USD", "price": "1", "ts": TS},
            {"symbol": "AAPL", "price": "2", "ts": TS},
            {"symbol": "BTC-USD", "price": "3", "ts": TS},
            {"symbol": "ETH-USD", "price": "4", "ts": TS},
        ],
    )
    every = client.get("/api/snapshot").get_json()
    assert every["head"] == 4
    assert [(t["symbol"], t["id"], t["price"]) for t in every["ticks"]] == [
        ("BTC-USD", 3, "3"),
        ("AAPL", 2, "2"),
        ("ETH-USD", 4, "4"),
    ]
    chosen = client.get("/api/snapshot?symbols=aapl,%20Btc-Usd").get_json()
    assert chosen["head"] == 4  # the head of the whole log, not of the chosen symbols
    assert [(t["symbol"], t["id"]) for t in chosen["ticks"]] == [("AAPL", 2), ("BTC-USD", 3)]


def test_snapshot_refuses_bad_symbols(client: Any) -> None:
    malformed = client.get("/api/snapshot?symbols=BTC%20USD")
    assert malformed.status_code == 400
    unknown = client.get("/api/snapshot?symbols=BTC-USD,nope")
    assert unknown.status_code == 404
    assert unknown.get_json()["unknown"] == ["NOPE"]


def test_ticks_pages_through_one_symbol_in_id_order(app: Flask, client: Any) -> None:
    symbols = ["BTC-USD", "AAPL"] * 12
    body = [{"symbol": s, "price": f"{i + 1}.5", "ts": TS} for i, s in enumerate(symbols)]
    ids = publish(client, body)
    btc = ids[0::2]
    got: list[dict[str, Any]] = []
    after: int | None = 0
    pages = 0
    while after is not None:
        page = client.get(f"/api/ticks?symbol=btc-usd&after={after}&limit=5").get_json()
        assert len(page["ticks"]) <= 5
        got.extend(page["ticks"])
        after = page["next_after"]
        pages += 1
        assert pages < 10
    assert [t["id"] for t in got] == btc
    assert {t["symbol"] for t in got} == {"BTC-USD"}
    assert [t["price"] for t in got] == [f"{i + 1}.5" for i in range(0, 24, 2)]


def test_ticks_next_after_is_null_on_the_last_page(client: Any) -> None:
    publish(client, [{"symbol": "AAPL", "price": "1", "ts": TS}] * 3)
    full = client.get("/api/ticks?symbol=AAPL&limit=2").get_json()
    assert [t["id"] for t in full["ticks"]] == [1, 2] and full["next_after"] == 2
    last = client.get("/api/ticks?symbol=AAPL&after=2&limit=2").get_json()
    assert [t["id"] for t in last["ticks"]] == [3] and last["next_after"] is None
    default = client.get("/api/ticks?symbol=AAPL").get_json()
    assert [t["id"] for t in default["ticks"]] == [1, 2, 3] and default["next_after"] is None
    empty = client.get("/api/ticks?symbol=MSFT").get_json()
    assert empty == {"ticks": [], "next_after": None}


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("symbol=AAPL&limit=0", 400),
        ("symbol=AAPL&limit=-1", 400),
        ("symbol=AAPL&limit=abc", 400),
        ("symbol=AAPL&limit=1.5", 400),
        ("symbol=AAPL&limit=%C2%B2", 400),  # "²" is a digit to str.isdigit()
        ("symbol=AAPL&after=-1", 400),
        ("symbol=AAPL&after=abc", 400),
        ("symbol=AAPL&after=9223372036854775808", 400),
        ("", 400),
        ("symbol=", 400),
        ("symbol=AAPL,MSFT", 400),
        ("symbol=A%20B", 400),
        ("symbol=NOPE", 404),
    ],
)
def test_ticks_refuses_bad_parameters(client: Any, query: str, status: int) -> None:
    response = client.get(f"/api/ticks?{query}")
    assert response.status_code == status
    assert response.is_json and response.get_json()["error"]


def test_ticks_caps_the_limit_at_a_thousand(client: Any) -> None:
    ids = post(client, [{"symbol": "AAPL", "price": "1"}] * 1005).get_json()["ids"]
    page = client.get("/api/ticks?symbol=AAPL&limit=99999").get_json()
    assert [t["id"] for t in page["ticks"]] == ids[:1000]
    assert page["next_after"] == ids[999]
    rest = client.get(f"/api/ticks?symbol=AAPL&after={ids[999]}&limit=99999").get_json()
    assert [t["id"] for t in rest["ticks"]] == ids[1000:]
    assert rest["next_after"] is None


def test_publish_is_forbidden_when_no_token_is_configured(make_app: Any) -> None:
    app = make_app(publish_token="")
    client = app.test_client()
    response = post(client, {"symbol": "AAPL", "price": "1"})
    assert response.status_code == 403
    assert "TICKER_PUBLISH_TOKEN" in response.get_json()["error"]
    assert post(client, {"symbol": "AAPL", "price": "1"}, headers={}).status_code == 403
    assert head(app) == 0


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ],
)
def test_publish_needs_the_right_bearer_token(
    app: Flask, client: Any, headers: dict[str, str]
) -> None:
    response = post(client, {"symbol": "AAPL", "price": "1"}, headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"]
    assert head(app) == 0


def test_publish_a_single_tick(client: Any) -> None:
    response = post(client, {"symbol": "AAPL", "price": "230.10", "ts": TS})
    assert response.status_code == 201
    assert response.get_json() == {"ids": [1]}
    assert client.get("/api/ticks?symbol=AAPL").get_json()["ticks"] == [
        {"id": 1, "symbol": "AAPL", "price": "230.10", "ts": TS}
    ]


def test_publish_a_list_returns_the_ids_in_the_order_given(client: Any) -> None:
    publish(client, {"symbol": "MSFT", "price": "1"})
    body = [
        {"symbol": "NVDA", "price": "3"},
        {"symbol": "aapl", "price": "1"},
        {"symbol": "NVDA", "price": "2"},
    ]
    assert publish(client, body) == [2, 3, 4]
    nvda = client.get("/api/ticks?symbol=NVDA").get_json()["ticks"]
    assert [(t["id"], t["price"]) for t in nvda] == [(2, "3"), (4, "2")]
    aapl = client.get("/api/ticks?symbol=AAPL").get_json()["ticks"]
    assert [(t["id"], t["symbol"]) for t in aapl] == [(3, "AAPL")]


@pytest.mark.parametrize(
    ("raw_price", "stored"),
    [
        ('"0.00001234"', "0.00001234"),
        ('"67012.350"', "67012.350"),
        ("12.50", "12.50"),
        ("0.00001234", "0.00001234"),
        ("100", "100"),
        ("1.10", "1.10"),
        ("1e-5", "0.00001"),
    ],
)
def test_publish_keeps_the_price_exactly(client: Any, raw_price: str, stored: str) -> None:
    publish(client, '{"symbol": "BTC-USD", "price": ' + raw_price + "}")
    (tick,) = client.get("/api/ticks?symbol=BTC-USD").get_json()["ticks"]
    assert tick["price"] == stored


@pytest.mark.parametrize(
    "ts",
    [
        "2026-11-21T10:00:00Z",
        "2026-11-21T10:00:00z",
        "2026-11-21T11:00:00+01:00",
        "2026-11-21T05:30:00-04:30",
        "2026-11-21T10:00:00.000000+00:00",
    ],
)
def test_publish_parses_ts_with_its_zone(client: Any, ts: str) -> None:
    publish(client, {"symbol": "AAPL", "price": "1", "ts": ts})
    (tick,) = client.get("/api/ticks?symbol=AAPL").get_json()["ticks"]
    assert tick["ts"] == TS


def test_publish_without_ts_stamps_the_time_of_arrival(client: Any) -> None:
    before = now_us()
    publish(client, {"symbol": "AAPL", "price": "1"})
    after = now_us()
    (tick,) = client.get("/api/ticks?symbol=AAPL").get_json()["ticks"]
    assert format_ts(before) <= tick["ts"] <= format_ts(after)


OK = {"symbol": "AAPL", "price": "1"}

REJECTED: list[tuple[str, Any, int, int | None, str | None]] = [
    # (case, body, status, index, field)
    ("invalid json", '{"symbol": "AAPL",', 400, None, None),
    ("empty body", "", 400, None, None),
    ("not utf-8", b"\xff\xfe{", 400, None, None),
    ("too deeply nested", "[" * 100_000, 400, None, None),
    ("empty list", [], 400, None, None),
    ("null", None, 400, 0, "tick"),
    ("a number", 5, 400, 0, "tick"),
    ("non-object item", [OK, 5], 400, 1, "tick"),
    ("list item", [OK, OK, [OK]], 400, 2, "tick"),
    ("missing price", [OK, {"symbol": "AAPL"}], 422, 1, "price"),
    ("null price", {"symbol": "AAPL", "price": None}, 422, 0, "price"),
    ("bool price", {"symbol": "AAPL", "price": True}, 422, 0, "price"),
    ("word price", {"symbol": "AAPL", "price": "abc"}, 422, 0, "price"),
    ("negative price", {"symbol": "AAPL", "price": "-1.5"}, 422, 0, "price"),
    ("zero price", {"symbol": "AAPL", "price": "0.00"}, 422, 0, "price"),
    ("exponent price", {"symbol": "AAPL", "price": "1e5"}, 422, 0, "price"),
    ("comma price", {"symbol": "AAPL", "price": "1,5"}, 422, 0, "price"),
    ("nan price", '{"symbol": "AAPL", "price": NaN}', 422, 0, "price"),
    ("huge price", '{"symbol": "AAPL", "price": 1e400}', 422, 0, "price"),
    ("missing symbol", [OK, OK, {"price": "1"}], 422, 2, "symbol"),
    ("number symbol", {"symbol": 5, "price": "1"}, 422, 0, "symbol"),
    ("malformed symbol", {"symbol": "AA PL", "price": "1"}, 400, 0, "symbol"),
    ("symbol with markup", [OK, {"symbol": "<b>X", "price": "1"}], 400, 1, "symbol"),
    ("symbol of 33", [OK, OK, {"symbol": "A" * 33, "price": "1"}], 400, 2, "symbol"),
    ("symbol with a comma", {"symbol": "AAPL,MSFT", "price": "1"}, 400, 0, "symbol"),
    ("symbol led by a dot", {"symbol": ".AAPL", "price": "1"}, 400, 0, "symbol"),
    ("empty symbol", {"symbol": " ", "price": "1"}, 400, 0, "symbol"),
    ("untracked symbol", [OK, {"symbol": "zzz-usd", "price": "1"}], 422, 1, "symbol"),
    ("word ts", {"symbol": "AAPL", "price": "1", "ts": "yesterday"}, 422, 0, "ts"),
    ("ts without zone", {**OK, "ts": "2026-11-21T10:00:00"}, 422, 0, "ts"),
    ("number ts", {"symbol": "AAPL", "price": "1", "ts": 1795255200}, 422, 0, "ts"),
    ("ts past 9999 in utc", {**OK, "ts": "9999-12-31T23:59:59-01:00"}, 422, 0, "ts"),
    ("unknown field", [OK, {**OK, "volume": "5"}], 422, 1, "volume"),
    ("negative size", [OK, {**OK, "size": "-1"}], 422, 1, "size"),
    ("word size", [OK, OK, {**OK, "size": "lots"}], 422, 2, "size"),
    ("exponent size", {**OK, "size": "1e3"}, 422, 0, "size"),
    ("bool size", {**OK, "size": False}, 422, 0, "size"),
    ("nan size", '{"symbol": "AAPL", "price": "1", "size": NaN}', 422, 0, "size"),
]


@pytest.mark.parametrize(
    ("body", "status", "index", "field"),
    [case[1:] for case in REJECTED],
    ids=[case[0] for case in REJECTED],
)
def test_a_rejected_body_writes_nothing(
    app: Flask, client: Any, body: Any, status: int, index: int | None, field: str | None
) -> None:
    publish(client, OK)
    before = head(app)
    raw = body if isinstance(body, (str, bytes)) else json.dumps(body)
    response = post(client, raw)
    assert response.status_code == status, response.data
    error = response.get_json()
    assert isinstance(error["error"], str) and error["error"]
    if index is not None:
        assert error["index"] == index
        assert error["field"] == field
        assert f"item {index}" in error["error"] and str(field) in error["error"]
    assert head(app) == before, "nothing from a rejected batch may be written"
    assert client.get("/healthz").status_code == 200


def test_an_untracked_symbol_is_named(client: Any) -> None:
    response = post(client, [OK, {"symbol": "zzz-usd", "price": "1"}])
    assert response.status_code == 422
    assert "ZZZ-USD" in response.get_json()["error"]
    well_formed = post(client, [OK, {"symbol": "^gspc", "price": "1"}])
    assert well_formed.status_code == 422
    assert "^GSPC" in well_formed.get_json()["error"]


def test_a_malformed_symbol_in_a_tick_is_quoted_with_the_grammar(client: Any) -> None:
    response = post(client, [OK, {"symbol": "btc usd", "price": "1"}])
    assert response.status_code == 400
    error = response.get_json()
    assert (error["index"], error["field"]) == (1, "symbol")
    assert "'btc usd'" in error["error"]
    assert "1 to 32 characters of A-Z 0-9 . - _ / : ^ =" in error["error"]


GRAMMAR_SYMBOLS = "BTC-USD,BTC/USDT,BRK.B,^GSPC,EURUSD=X," + "A" * 32


@pytest.mark.parametrize(
    "path", ["/stream?symbols={}", "/api/snapshot?symbols={}", "/api/ticks?symbol={}"]
)
@pytest.mark.parametrize(
    "raw",
    [
        "A" * 33,
        ".BRK",
        "-BTC",
        "=X",
        "BTC%20USD",
        "%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E",
        "%C3%84PFEL",  # Ä
        "%EF%AC%80",  # ﬀ, which upper-cases to FF
    ],
)
def test_a_malformed_symbol_is_a_400_stating_the_grammar_wherever_read(
    make_app: Any, path: str, raw: str
) -> None:
    client = make_app(symbols=GRAMMAR_SYMBOLS).test_client()
    response = client.get(path.format(raw))
    assert response.status_code == 400
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert "malformed symbol" in error
    assert "1 to 32 characters of A-Z 0-9 . - _ / : ^ =" in error
    assert "starting with a letter, a digit or ^" in error


@pytest.mark.parametrize(
    "raw", ["btc-usd", "btc/usdt", "brk.b", "%5Egspc", "eurusd%3Dx", "%20AAPL%20", "a" * 32]
)
def test_every_kind_of_well_formed_symbol_is_read_case_insensitively(
    make_app: Any, raw: str
) -> None:
    client = make_app(symbols=GRAMMAR_SYMBOLS + ",AAPL").test_client()
    snapshot = client.get(f"/api/snapshot?symbols={raw}")
    assert snapshot.status_code == 200, snapshot.get_json()
    page = client.get(f"/api/ticks?symbol={raw}")
    assert page.status_code == 200, page.get_json()


@pytest.mark.parametrize(
    ("query", "headers", "status"),
    [
        ("symbols=BTC%20USD", {}, 400),
        ("symbols=" + "A" * 33, {}, 400),
        ("symbols=BTC-USD,.ETH", {}, 400),
        ("symbols=%3Cb%3EX", {}, 400),
        ("symbols=%5EGSPC", {}, 404),  # well-formed, not tracked
        ("symbols=" + "Z" * 32, {}, 404),
        ("symbols=BTC-USD,ETH-USD,AAPL", {}, 400),  # more than max_symbols=2
        ("symbols=BTC-USD,xyz", {}, 404),
        ("last_event_id=-1", {}, 400),
        ("last_event_id=abc", {}, 400),
        ("last_event_id=9223372036854775808", {}, 400),
        ("last_event_id=1.5", {}, 400),
        ("", {"Last-Event-ID": "-1"}, 400),
        ("", {"Last-Event-ID": "abc"}, 400),
        ("", {"Last-Event-ID": "9223372036854775808"}, 400),
        ("last_event_id=5", {"Last-Event-ID": "abc"}, 400),  # the header wins
        ("symbols=nope&last_event_id=5", {}, 404),
    ],
)
def test_stream_refuses_bad_requests_with_json_and_no_stream(
    make_app: Any, query: str, headers: dict[str, str], status: int
) -> None:
    client = make_app(max_symbols=2).test_client()
    response = client.get(f"/stream?{query}", headers=headers)
    assert response.status_code == status
    assert response.mimetype == "application/json"
    assert response.get_json()["error"]


def test_stream_names_the_unknown_symbols(client: Any) -> None:
    response = client.get("/stream?symbols=BTC-USD,xyz,ABC")
    assert response.status_code == 404
    body = response.get_json()
    assert body["unknown"] == ["XYZ", "ABC"]
    assert "XYZ" in body["error"] and "ABC" in body["error"]


def test_stream_too_many_symbols_names_the_limit(make_app: Any) -> None:
    client = make_app(max_symbols=2).test_client()
    response = client.get("/stream?symbols=BTC-USD,ETH-USD,AAPL")
    assert response.status_code == 400
    assert "2" in response.get_json()["error"]


def test_healthz_reports_head_producer_and_newest_tick_age(app: Flask, client: Any) -> None:
    empty = client.get("/healthz")
    assert empty.status_code == 200
    body = empty.get_json()
    assert body["head"] == 0
    assert body["newest_tick_age_s"] is None
    assert body["producer"]["mode"] == "off"
    assert body["producer"]["source"] == "sim"
    assert body["producer"]["holder"] is None
    minute_ago = format_ts(now_us() - 60_000_000)
    publish(client, [OK, {**OK, "ts": minute_ago}])
    body = client.get("/healthz").get_json()
    assert body["head"] == 2
    assert 59.0 <= body["newest_tick_age_s"] < 120.0


def test_healthz_names_the_producer_holding_the_lease(app: Flask, client: Any) -> None:
    from ticker import lease
    from ticker.db import writing

    with writing(app_state(app).engine) as conn:
        lease.claim(conn, "host:1:abc", 30.0, now_us())
    assert client.get("/healthz").get_json()["producer"]["holder"] == "host:1:abc"


@pytest.mark.parametrize("kind", ["directory", "not a database"])
def test_healthz_is_503_when_the_database_is_unusable(tmp_path: Path, kind: str) -> None:
    if kind == "directory":
        path = tmp_path / "a-directory"
        path.mkdir()
    else:
        path = tmp_path / "garbage.db"
        path.write_bytes(b"this is not a database file" * 1000)
    app = create_app({"database_url": f"sqlite:///{path}", "producer": "off"})
    try:
        response = app.test_client().get("/healthz")
        assert response.status_code == 503
        assert "database" in response.get_json()["error"]
    finally:
        lifecycle.stop(app_state(app))
