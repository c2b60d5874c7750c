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
    LogSettings,
    Retention,
    Settings,
    load_log_settings,
    load_settings,
    normalise_symbol,
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
        ("SOURCE_SILENCE", "0"),
        ("SOURCE_SILENCE", "never"),
        ("SOURCE_BACKOFF", "-1"),
        ("SOURCE_SYMBOLS", "BTC-USD"),
        ("SOURCE_SYMBOLS", "BTC-USD="),
        ("SOURCE_SYMBOLS", "BTC-USD=BTC USDT"),
        ("SOURCE_SYMBOLS", "BTC-USD=BTC?USDT"),
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


WELL_FORMED = [
    ("BTC-USD", "BTC-USD"),
    ("BTC/USDT", "BTC/USDT"),
    ("BRK.B", "BRK.B"),
    ("^GSPC", "^GSPC"),
    ("EURUSD=X", "EURUSD=X"),
    ("ES=F", "ES=F"),
    ("eth:perp_1", "ETH:PERP_1"),
    ("^gspc", "^GSPC"),
    ("  brk.b\t", "BRK.B"),
    ("7203.T", "7203.T"),
    ("A", "A"),
    ("A" * 32, "A" * 32),
]
MALFORMED = [
    "",
    "   ",
    "A" * 33,
    ".BTC",
    "-BTC",
    "=X",
    "_X",
    "/USD",
    ":X",
    "BTC USD",
    "BTC,USD",
    "BTC\nUSD",
    "BTC-USD\x00",
    "BTC€",
    "ÄPFEL",
    "ﬀ",  # upper-cases to the ASCII "FF": refused before it gets there
    "b\u0131tc",  # a dotless i upper-cases to "I"
    "<b>X",
    "<IMG/SRC=X/ONERROR=ALERT(1)>",
    "&AMP;",
    "A'B",
    'A"B',
    "A+B",
    "A*",
    "A%20B",
]


@pytest.mark.parametrize(("raw", "symbol"), WELL_FORMED)
def test_a_well_formed_symbol_is_upper_cased(raw: str, symbol: str) -> None:
    assert normalise_symbol(raw) == symbol
    assert settings(SYMBOLS=f"AAPL,{raw}").symbols == ("AAPL", symbol)


@pytest.mark.parametrize("raw", MALFORMED)
def test_a_malformed_symbol_is_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="1 to 32 characters"):
        normalise_symbol(raw)


@pytest.mark.parametrize("raw", [m for m in MALFORMED if m.strip() and "," not in m])
def test_a_malformed_symbol_stops_start_up_stating_the_grammar(raw: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(SYMBOLS=f"AAPL,{raw}")
    assert caught.value.variable == "TICKER_SYMBOLS"
    message = str(caught.value)
    assert repr(raw.strip()[:40]) in message
    assert "1 to 32 characters of A-Z 0-9 . - _ / : ^ =" in message
    assert "starting with a letter, a digit or ^" in message


@pytest.mark.parametrize(
    ("name", "value"),
    [("CSV_SYMBOL", ".GOLD"), ("SOURCE_SYMBOLS", "GOLD=PAXGUSDT,<b>=BTCUSDT")],
)
def test_a_malformed_source_symbol_stops_start_up_stating_the_grammar(
    name: str, value: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(SYMBOLS="GOLD", **{name: value})
    assert caught.value.variable == f"TICKER_{name}"
    assert "1 to 32 characters of A-Z 0-9 . - _ / : ^ =" in str(caught.value)


def test_a_source_symbol_with_an_equals_sign_maps_to_the_exchanges_name() -> None:
    s = settings(SYMBOLS="EURUSD=X", SOURCE_SYMBOLS="eurusd=x=EURUSDT")
    assert s.source_symbols == (("EURUSD=X", "EURUSDT"),)


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
        SOURCE_SILENCE="12.5",
        SOURCE_BACKOFF="4",
    )
    assert (s.source_silence, s.source_backoff) == (12.5, 4.0)
    assert (settings().source_silence, settings().source_backoff) == (30.0, 30.0)
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
        "SOURCE_SILENCE",
        "SOURCE_BACKOFF",
        "SOURCE_SYMBOLS",
        "SOURCE_QUOTES",
        "CSV_SYMBOL",
        "CSV_SPEED",
        "CSV_LOOP",
    ):
        assert f"| `TICKER_{name}` |" in readme, name


def test_the_log_settings_default_to_info_text_and_no_access_log() -> None:
    assert load_log_settings({}) == LogSettings("INFO", "text", False)
    assert load_log_settings({"TICKER_LOG_LEVEL": "  "}) == LogSettings()


def test_the_log_settings_are_read_case_insensitively() -> None:
    env = {"TICKER_LOG_LEVEL": " debug", "TICKER_LOG_FORMAT": "JSON ", "TICKER_ACCESS_LOG": "Yes"}
    assert load_log_settings(env) == LogSettings("DEBUG", "json", True)


@pytest.mark.parametrize(
    ("word", "value"),
    [("1", True), ("true", True), ("on", True), ("0", False), ("No", False), ("OFF", False)],
)
def test_every_switch_takes_the_same_true_and_false_words(word: str, value: bool) -> None:
    assert load_log_settings({"TICKER_ACCESS_LOG": word}).access_log is value
    assert settings(CSV_LOOP=word).csv_loop is value


@pytest.mark.parametrize(
    ("name", "value", "choices"),
    [
        ("LOG_LEVEL", "chatty", "DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ("LOG_FORMAT", "xml", "text, json"),
        ("ACCESS_LOG", "maybe", "true or false"),
    ],
)
def test_a_bad_log_setting_names_the_variable_and_the_choices(
    name: str, value: str, choices: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_log_settings({f"TICKER_{name}": value})
    assert caught.value.variable == f"TICKER_{name}"
    assert repr(value) in str(caught.value) and choices in str(caught.value)


def test_importing_the_config_loads_nothing_a_worker_must_load_first() -> None:
    # gunicorn's master imports it (via gunicorn_conf) before any worker exists:
    # prometheus_client picks its multiprocess mode, gevent must patch first.
    heavy = ("prometheus_client", "sqlalchemy", "gevent", "psycopg")
    probe = f"import sys, ticker.config; print([m for m in {heavy!r} if m in sys.modules])"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_config_package_re_exports_every_name_it_lists() -> None:
    import ticker.config

    for name in ticker.config.__all__:
        assert getattr(ticker.config, name) is not None, name


def test_candle_retention_defaults_keep_fine_candles_briefly_and_coarse_ones_for_ever() -> None:
    keep = dict(load_settings("sqlite://", environ={}).candle_retention)
    day = 86400.0
    assert keep == {
        1: day, 60: 30 * day, 300: 90 * day, 900: 180 * day, 3600: 730 * day,
        14400: None, 86400: None,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "changed"),
    [
        ("90d", dict.fromkeys((1, 60, 300, 900, 3600, 14400, 86400), 90 * 86400.0)),
        ("forever", dict.fromkeys((1, 60, 300, 900, 3600, 14400, 86400))),
        ("1s=2d, 1D=365d", {1: 2 * 86400.0, 86400: 365 * 86400.0}),
        ("4h=forever,1m=24h", {14400: None, 60: 86400.0}),
    ],
)
def test_candle_retention_is_read(raw: str, changed: dict[int, float | None]) -> None:
    keep = dict(
        load_settings("sqlite://", environ={"TICKER_CANDLE_RETENTION": raw}).candle_retention
    )
    defaults = dict(load_settings("sqlite://", environ={}).candle_retention)
    assert keep == {**defaults, **changed}


@pytest.mark.parametrize("raw", ["2m=1d", "1s", "1s=", "1s=0d", "1s=5x", "1m=1h", "1h=12h", "=1d"])
def test_a_bad_candle_retention_stops_start_up_naming_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings("sqlite://", environ={"TICKER_CANDLE_RETENTION": raw})
    assert error.value.variable == "TICKER_CANDLE_RETENTION"
