"""The csv:PATH source: the shipped samples replayed in order, at the chosen speed."""

from __future__ import annotations

import csv
import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, text

from tests.conftest import Server
from tests.fakes import captured, log_rows, stop
from ticker import ROOT
from ticker.errors import ConfigError
from ticker.events import Event
from ticker.sources import CSVSource
from ticker.state import app_state

SAMPLES = ROOT / "ticker" / "sources" / "samples"
DAILY = SAMPLES / "btc-usd-daily.csv"
TICKS = SAMPLES / "ticks.csv"
SYMBOLS = ("BTC-USD", "ETH-USD", "DOGE-USD")
SECOND = 1_000_000
T0 = 1_795_255_200_000_000


def closes() -> list[str]:
    """The Close column of the daily sample, read independently of the source."""
    with DAILY.open(newline="") as file:
        return [row["Close"] for row in csv.DictReader(file)]


def tick_rows() -> list[tuple[str, str, str]]:
    with TICKS.open(newline="") as file:
        return [(row["ts"], row["symbol"], row["price"]) for row in csv.DictReader(file)]


def write(tmp_path: Path, content: str, name: str = "prices.csv") -> Path:
    path = tmp_path / name
    path.write_text(content)
    return path


@pytest.fixture
def csv_app(make_app: Callable[..., Flask]) -> Iterator[Callable[..., Flask]]:
    apps: list[Flask] = []

    def build(**config: Any) -> Flask:
        app = make_app(**{"symbols": ",".join(SYMBOLS), **config})
        apps.append(app)
        return app

    yield build
    for app in apps:
        stop(app)


def test_the_daily_sample_replays_one_row_per_interval_in_order() -> None:
    source = CSVSource(DAILY, SYMBOLS, loop=False)
    expected = closes()
    assert len(expected) > 20
    got = []
    for step in range(len(expected)):
        ticks = source.next_ticks(T0 + step * SECOND)
        assert [(t.symbol, t.ts) for t in ticks] == [("BTC-USD", T0 + step * SECOND)]
        got.append(ticks[0].price)
    assert got == expected  # the file's exact strings, trailing zeros and all
    assert source.next_ticks(T0) == []  # stopped at the end
    assert source.next_ticks(T0) == []


def test_a_looping_replay_starts_over_at_the_end() -> None:
    source = CSVSource(DAILY, SYMBOLS, loop=True)
    expected = closes()
    got = [source.next_ticks(T0 + i)[0].price for i in range(2 * len(expected) + 1)]
    assert got == expected + expected + expected[:1]


def test_the_tick_file_replays_each_time_step_together() -> None:
    source = CSVSource(TICKS, SYMBOLS, loop=False)
    rows = tick_rows()
    steps = [list(g) for _, g in itertools.groupby(rows, key=lambda r: r[0])]
    for number, step in enumerate(steps):
        ticks = source.next_ticks(T0 + number)
        assert [(t.symbol, t.price) for t in ticks] == [(s, p) for _, s, p in step]
    assert source.next_ticks(T0) == []


def test_a_speed_factor_replays_the_files_clock_faster() -> None:
    # Two days of the file per second: rows a day apart come half a second apart.
    source = CSVSource(DAILY, SYMBOLS, speed=2 * 86400, loop=False)
    expected = closes()

    def at(seconds: float) -> list[str]:
        return [t.price for t in source.next_ticks(T0 + int(seconds * SECOND))]

    assert at(0) == expected[:1]
    assert at(0.25) == []
    assert at(0.5) == expected[1:2]
    assert at(0.75) == []
    assert at(1.5) == expected[2:4]  # a late run catches up on what came due
    assert at(1000) == expected[4:]
    assert at(2000) == []


def test_through_the_producer_the_log_holds_the_files_rows_in_order(csv_app: Any) -> None:
    app = csv_app(source=f"csv:{DAILY}", csv_loop="false")
    producer = app_state(app).producer
    for _ in range(len(closes()) + 3):
        producer.produce()
    assert log_rows(app) == [("BTC-USD", price) for price in closes()]


def test_csv_symbol_names_the_daily_files_symbol(csv_app: Any) -> None:
    app = csv_app(source=f"csv:{DAILY}", csv_symbol="eth-usd")
    app_state(app).producer.produce()
    assert log_rows(app) == [("ETH-USD", closes()[0])]


def test_a_tick_file_through_the_producer(csv_app: Any) -> None:
    app = csv_app(source=f"csv:{TICKS}", csv_loop="false")
    producer = app_state(app).producer
    for _ in range(40):
        producer.produce()
    assert log_rows(app) == [(s, p) for _, s, p in tick_rows()]


def test_at_the_chosen_speed_under_gunicorn(serve: Callable[..., Server]) -> None:
    interval = 0.2
    server = serve(workers=2, source=f"csv:{DAILY}", symbols="BTC-USD", tick_interval=interval)
    deadline = time.monotonic() + 30
    while len(rows := db_rows(server.db_url)) < 12:
        assert time.monotonic() < deadline, f"only {len(rows)} rows replayed"
        time.sleep(0.05)
    assert [p for p, _ in rows] == closes()[: len(rows)]
    ts = [t for _, t in rows]
    span = (ts[-1] - ts[0]) / SECOND
    # One row per interval: as many rows as intervals passed, not a burst.
    assert len(ts) - 1 <= span / interval + 1
    assert span >= (len(ts) - 1) * interval * 0.5


def db_rows(db_url: str) -> list[tuple[str, int]]:
    engine = create_engine(db_url)
    with engine.connect() as conn:
        found = conn.execute(text("SELECT price, ts FROM ticks ORDER BY id"))
        rows = [(str(r[0]), int(r[1])) for r in found]
    engine.dispose()
    return rows


def test_a_symbol_column_names_each_rows_symbol(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "Date,Symbol,Open,High,Low,Close,Volume\n"
        "2024-01-02,eth-usd,1,1,1,2300.50,10\n"
        "2024-01-02,BTC-USD,1,1,1,45000.00,10\n",
    )
    source = CSVSource(path, SYMBOLS)
    assert [(t.symbol, t.price) for t in source.next_ticks(T0)] == [
        ("ETH-USD", "2300.50"),
        ("BTC-USD", "45000.00"),
    ]


def test_symbols_in_the_file_follow_the_symbol_grammar(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "ts,symbol,price\n"
        "2024-01-01T00:00:00Z,^gspc,5000.25\n"
        "2024-01-01T00:00:01Z,<b>X,1.5\n"
        "2024-01-01T00:00:02Z,.BTC-USD,2.5\n"
        "2024-01-01T00:00:03Z, eurusd=x ,1.0846\n",
    )
    with captured() as messages:
        source = CSVSource(path, ("^GSPC", "EURUSD=X", "BTC-USD"))
    ticks = [source.next_ticks(T0)[0] for _ in range(2)]
    assert [(t.symbol, t.price) for t in ticks] == [("^GSPC", "5000.25"), ("EURUSD=X", "1.0846")]
    assert any("skipped 2 rows malformed" in m for m in messages), messages


def test_rows_are_replayed_in_time_order_whatever_the_files_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "Date,Open,High,Low,Close,Adj Close,Volume\n"
        "2024-01-03,1,1,1,3.00,3.00,1\n"
        "2024-01-01,1,1,1,1.00,1.00,1\n"
        "2024-01-02,1,1,1,2.00,2.00,1\n",
    )
    source = CSVSource(path, SYMBOLS)
    assert [source.next_ticks(T0)[0].price for _ in range(3)] == ["1.00", "2.00", "3.00"]


def test_unusable_rows_are_skipped_and_logged(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "\ufeffDate,Open,High,Low,Close,Adj Close,Volume\n"  # Excel's byte order mark
        "2024-01-01,1,1,1,1.50,1.50,1\n"
        "2024-01-02,null,null,null,null,null,null\n"  # a holiday in a Yahoo export
        "\n"
        "yesterday,1,1,1,2.00,2.00,1\n"
        "2024-01-04T00:00:00+01:00,1,1,1,4.00,4.00,1\n",
    )
    with captured() as messages:
        source = CSVSource(path, SYMBOLS)
    assert [source.next_ticks(T0)[0].price for _ in range(2)] == ["1.50", "4.00"]
    assert any("skipped 2 rows malformed" in m for m in messages), messages


def test_rows_of_untracked_symbols_are_skipped(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "ts,symbol,price\n2024-01-01T00:00:00Z,XRP-USD,0.5\n2024-01-01T00:00:01Z,BTC-USD,42000.1\n",
    )
    with captured() as messages:
        source = CSVSource(path, SYMBOLS)
    assert [(t.symbol, t.price) for t in source.next_ticks(T0)] == [("BTC-USD", "42000.1")]
    assert any("XRP-USD, which is not tracked" in m for m in messages)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("when,what,how much\n2024-01-01,BTC-USD,1\n", "expected a header"),
        ("Date,Open,High,Low,Close,Adj Close,Volume\n", "no row to replay"),
        ("ts,symbol,price\n2024-01-01,BTC-USD,abc\n", "no row to replay"),
        ("", "expected a header"),
    ],
)
def test_a_file_with_nothing_to_replay_stops_start_up(
    csv_app: Any, tmp_path: Path, content: str, reason: str
) -> None:
    path = write(tmp_path, content)
    with pytest.raises(ConfigError, match=reason) as caught:
        csv_app(source=f"csv:{path}")
    assert caught.value.variable == "TICKER_SOURCE"


def test_a_takeover_resumes_after_the_last_replayed_row() -> None:
    source = CSVSource(DAILY, SYMBOLS)
    expected = closes()
    source.resume([Event(7, "BTC-USD", expected[4], T0), Event(3, "ETH-USD", "1.00", T0)])
    assert source.next_ticks(T0)[0].price == expected[5]
    source.resume([Event(8, "BTC-USD", "0.01", T0)])  # no row matches: carry on
    assert source.next_ticks(T0)[0].price == expected[6]


def test_the_daily_volume_and_the_tick_files_size_are_each_ticks_exact_size(
    tmp_path: Path,
) -> None:
    daily = write(
        tmp_path,
        "Date,Open,High,Low,Close,Adj Close,Volume\n"
        "2024-01-01,1,1,1,1.50,1.50,26171726873\n"
        "2024-01-02,1,1,1,2.50,2.50,null\n"  # a good price without a volume
        "2024-01-03,1,1,1,3.50,3.50,\n",
    )
    with captured() as messages:
        source = CSVSource(daily, SYMBOLS)
    got = [source.next_ticks(T0)[0] for _ in range(3)]
    assert [(t.price, t.size) for t in got] == [
        ("1.50", "26171726873"),
        ("2.50", None),
        ("3.50", None),
    ]
    assert any("1 rows have a size or volume" in m for m in messages), messages
    ticks = tmp_path / "ticks.csv"
    ticks.write_text(
        "ts,symbol,price,size\n"
        "2024-01-01T00:00:00Z,BTC-USD,45000.00,0.00100000\n"
        "2024-01-01T00:00:01Z,BTC-USD,45001.00,\n"
    )
    source = CSVSource(ticks, SYMBOLS)
    assert [source.next_ticks(T0)[0].size for _ in range(2)] == ["0.00100000", None]
    no_volume = tmp_path / "plain.csv"
    no_volume.write_text("Date,Close\n2024-01-01,1.25\n")
    assert CSVSource(no_volume, SYMBOLS).next_ticks(T0)[0].size is None
