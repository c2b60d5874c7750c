"""Settings: defaults, validation naming the variable, retention, symbols, start-up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import ticker_env
from ticker import ROOT, create_app
from ticker.config import (
    DEFAULT_SYMBOLS,
    ConfigError,
    Retention,
    Settings,
    load_settings,
    parse_retention,
)

DEFAULT_URL = "sqlite:///default.db"


def settings(**env: str) -> Settings:
    return load_settings(DEFAULT_URL, {f"TICKER_{k}": v for k, v in env.items()})


def test_defaults() -> None:
    s = load_settings(DEFAULT_URL, {})
    assert s.database_url == DEFAULT_URL
    assert s.symbols == tuple(DEFAULT_SYMBOLS.split(","))
    assert s.source == "sim"
    assert s.tick_interval == 1.0
    assert s.seed is None
    assert s.retention == Retention(max_age=7 * 86400.0)
    assert s.heartbeat == 15.0
    assert s.max_symbols == 50
    assert s.max_streams == 5000
    assert s.publish_token is None
    assert s.producer == "auto"
    assert s.cors_origins == ()
    assert (s.source_url, s.source_timeout, s.source_symbols, s.source_quotes) == (
        None,
        2.0,
        (),
        None,
    )
    assert (s.csv_symbol, s.csv_speed, s.csv_loop) == (None, None, True)


def test_environment_values_are_read() -> None:
    s = load_settings(
        DEFAULT_URL,
        {
            "TICKER_DATABASE_URL": "sqlite:///other.db",
            "TICKER_TICK_INTERVAL": "0.25",
            "TICKER_HEARTBEAT": "2",
            "TICKER_MAX_SYMBOLS": "3",
            "TICKER_MAX_STREAMS": "10",
            "TICKER_SEED": "42",
            "TICKER_RETENTION": "24h",
            "TICKER_SOURCE": "NONE",
            "TICKER_PRODUCER": "Off",
            "TICKER_PUBLISH_TOKEN": " secret ",
        },
    )
    assert s.database_url == "sqlite:///other.db"
    assert (s.tick_interval, s.heartbeat) == (0.25, 2.0)
    assert (s.max_symbols, s.max_streams, s.seed) == (3, 10, 42)
    assert s.retention == Retention(max_age=86400.0)
    assert (s.source, s.producer) == ("none", "off")
    assert s.publish_token == "secret"


def test_overrides_win_over_the_environment() -> None:
    s = load_settings(DEFAULT_URL, {"TICKER_HEARTBEAT": "5"}, {"heartbeat": 7})
    assert s.heartbeat == 7.0


@pytest.mark.parametrize("empty", ["", "   "])
def test_an_empty_value_means_unset(empty: str) -> None:
    s = load_settings(DEFAULT_URL, {"TICKER_PUBLISH_TOKEN": "from-env"}, {"publish_token": empty})
    assert s.publish_token is None


def test_a_none_override_unsets_the_variable_instead_of_setting_the_text_none() -> None:
    s = load_settings(DEFAULT_URL, {"TICKER_PUBLISH_TOKEN": "from-env"}, {"publish_token": None})
    assert s.publish_token is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TICK_INTERVAL", "abc"),
        ("TICK_INTERVAL", "0"),
        ("TICK_INTERVAL", "-1"),
        ("TICK_INTERVAL", "nan"),
        ("TICK_INTERVAL", "inf"),
        ("HEARTBEAT", "soon"),
        ("HEARTBEAT", "0"),
        ("HEARTBEAT", "infinity"),
        ("MAX_SYMBOLS", "0"),
        ("MAX_SYMBOLS", "1.5"),
        ("MAX_SYMBOLS", "many"),
        ("MAX_STREAMS", "0"),
        ("MAX_STREAMS", "-5"),
        ("MAX_STREAMS", "1e3"),
        ("SEED", "-1"),
        ("SEED", "x"),
        ("RETENTION", "forever"),
        ("RETENTION", "0"),
        ("RETENTION", "0s"),
        ("RETENTION", "1.5h"),
        ("RETENTION", "7w"),
        ("RETENTION", ","),
        ("SOURCE", "nasdaq"),
        ("SOURCE", "sim:fast"),
        ("SOURCE", "csv:"),
        ("SOURCE", "csv:/no/such/file.csv"),
        ("SOURCE", "python:"),
        ("SOURCE", "python:mymodule"),
        ("SOURCE", "python:my module:Thing"),
        ("SOURCE_URL", "api.binance.com"),
        ("SOURCE_URL", "ftp://api.binance.com"),
        ("SOURCE_URL", "https://"),
        ("SOURCE_URL", "https://api.binance.com/?x=1"),
        ("SOURCE_TIMEOUT", "0"),
        ("SOURCE_TIMEOUT", "soon"),
        ("SOURCE_SYMBOLS", "BTC-USD"),
        ("SOURCE_SYMBOLS", "BTC-USD="),
        ("SOURCE_SYMBOLS", "BTC-USD=BTC USDT"),
        ("SOURCE_SYMBOLS", "BTC-USD=BTC/USDT"),
        ("SOURCE_SYMBOLS", "XRP-USD=XRPUSDT"),  # not tracked
        ("SOURCE_QUOTES", "USD"),
        ("SOURCE_QUOTES", "USD=US$"),
        ("CSV_SYMBOL", "XRP-USD"),
        ("CSV_SYMBOL", "BTC USD"),
        ("CSV_SPEED", "fast"),
        ("CSV_SPEED", "0"),
        ("CSV_SPEED", "-2"),
        ("CSV_SPEED", "inf"),
        ("CSV_LOOP", "maybe"),
        ("PRODUCER", "on"),
        ("SYMBOLS", "BTC USD"),
        ("SYMBOLS", "BTC-USD,ETH USD"),
        ("SYMBOLS", "A" * 33),
    ],
)
def test_a_bad_value_raises_config_error_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(**{name: value})
    assert caught.value.variable == f"TICKER_{name}"
    assert f"TICKER_{name}" in str(caught.value)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("30s", Retention(max_age=30.0)),
        ("15m", Retention(max_age=900.0)),
        ("24h", Retention(max_age=86400.0)),
        ("7d", Retention(max_age=7 * 86400.0)),
        ("7D", Retention(max_age=7 * 86400.0)),
        ("500000", Retention(max_events=500000)),
        ("24h,500000", Retention(max_age=86400.0, max_events=500000)),
        ("500000, 24h", Retention(max_age=86400.0, max_events=500000)),
    ],
)
def test_parse_retention(raw: str, expected: Retention) -> None:
    assert parse_retention(raw) == expected


@pytest.mark.parametrize(
    "raw", ["", ",", "0", "0s", "-5", "h", "1.5h", "24h,48h", "5,6", "24h;500000", "7w", "²"]
)
def test_parse_retention_refuses(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_retention(raw)


def test_symbols_are_upper_cased_stripped_and_deduplicated_in_order() -> None:
    s = settings(SYMBOLS=" btc-usd, AAPL ,Btc-Usd,eth-usd,aapl")
    assert s.symbols == ("BTC-USD", "AAPL", "ETH-USD")


def test_create_app_refuses_a_bad_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TICKER_TICK_INTERVAL"):
        create_app({"database_url": f"sqlite:///{tmp_path / 'x.db'}", "tick_interval": "abc"})


def test_create_app_refuses_a_bad_environment_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TICKER_MAX_STREAMS", "lots")
    with pytest.raises(ConfigError, match="TICKER_MAX_STREAMS"):
        create_app({"database_url": f"sqlite:///{tmp_path / 'x.db'}"})


@pytest.mark.parametrize("command", [["db", "upgrade"], ["serve"]])
def test_the_cli_stops_with_a_message_naming_the_variable(
    command: list[str], tmp_path: Path
) -> None:
    db = tmp_path / "cli.db"
    env = ticker_env(database_url=f"sqlite:///{db}", tick_interval="abc")
    # Unusable, so a serve that got past the config check fails fast instead of serving.
    env["HOST"] = "host.invalid"
    done = subprocess.run(
        [sys.executable, "-m", "ticker.cli", *command],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "TICKER_TICK_INTERVAL" in output
    assert "Traceback" not in output
    assert not db.exists(), "nothing may be created from a bad configuration"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("sim", "sim"),
        ("Coinbase", "coinbase"),
        (" BINANCE ", "binance"),
        ("none", "none"),
        ("python:mypkg.quotes:MyQuotes", "python:mypkg.quotes:MyQuotes"),
    ],
)
def test_source_names_are_normalised(raw: str, expected: str) -> None:
    assert settings(SOURCE=raw).source == expected


def test_a_csv_source_path_is_made_absolute_and_keeps_its_case(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "Prices.CSV").write_text("ts,symbol,price\n")
    monkeypatch.chdir(tmp_path)
    assert settings(SOURCE="CSV:Prices.CSV").source == f"csv:{tmp_path / 'Prices.CSV'}"


def test_a_csv_path_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a readable file"):
        settings(SOURCE=f"csv:{tmp_path}")


def test_the_source_options_are_read() -> None:
    s = settings(
        SYMBOLS="BTC-USD,GOLD",
        SOURCE_URL="https://api.binance.us/",
        SOURCE_TIMEOUT="0.5",
        SOURCE_SYMBOLS=" gold = paxgusdt ,",
        SOURCE_QUOTES="usd=usdc,EUR=EUR",
        CSV_SYMBOL="gold",
        CSV_SPEED="86400",
        CSV_LOOP="No",
    )
    assert s.source_url == "https://api.binance.us"
    assert s.source_timeout == 0.5
    assert s.source_symbols == (("GOLD", "PAXGUSDT"),)
    assert s.source_quotes == (("USD", "USDC"), ("EUR", "EUR"))
    assert (s.csv_symbol, s.csv_speed, s.csv_loop) == ("GOLD", 86400.0, False)
    assert settings(CSV_SPEED="Step").csv_speed is None
    assert settings(CSV_LOOP="on").csv_loop is True


def test_the_readme_lists_every_source_variable() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in (
        "SOURCE",
        "SOURCE_URL",
        "SOURCE_TIMEOUT",
        "SOURCE_SYMBOLS",
        "SOURCE_QUOTES",
        "CSV_SYMBOL",
        "CSV_SPEED",
        "CSV_LOOP",
    ):
        assert f"| `TICKER_{name}` |" in readme, name
