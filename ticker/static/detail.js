// The detail view of one symbol: candlesticks with volume bars from /api/candles,
// drawn by TradingView's Lightweight Charts (vendored, loaded the first time a view
// opens), an interval picker, a read-out of the candle under the crosshair, and the
// forming candle moving with every live tick (see candles.js for the anchor rule).
// Every value shown goes through textContent; the chart draws on canvas.
"use strict";
window.TickerDetail = (function () {
  const D = window.TickerDecimal;
  const { Candles, INTERVALS } = window.TickerCandles;
  const MAX_PRECISION = 10;

  let library = null;

  // The library is a file of ours, like every script the page runs (CSP: script-src 'self').
  function loadLibrary(url) {
    if (window.LightweightCharts) return Promise.resolve(window.LightweightCharts);
    if (!library) {
      library = new Promise((resolve, reject) => {
        const script = document.createElement("script");
        script.src = url;
        script.onload = () => resolve(window.LightweightCharts);
        script.onerror = () => {
          library = null;
          script.remove();
          reject(new Error("the chart library did not load"));
        };
        document.head.appendChild(script);
      });
    }
    return library;
  }

  function css(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function pad(n) {
    return String(n).padStart(2, "0");
  }

  // A candle's start in UTC, as the chart's time axis shows it.
  function formatStart(seconds, interval) {
    const d = new Date(seconds * 1000);
    const day = `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
    if (interval === "1d") return day;
    const time = `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;
    return `${day} ${time}${interval === "1s" ? ":" + pad(d.getUTCSeconds()) : ""} UTC`;
  }

  function create({ el, candlesUrl, chartsUrl }) {
    const view = {
      symbol: null,
      interval: null,
      candles: null,
      epoch: 0, // bumped for each new view, so a late answer for an old one is dropped
      error: null,
      precision: 0,
      priceFormatSet: false,
      chart: null,
      price: null,
      volume: null,
      hovered: null, // the time under the crosshair, or null: then the newest candle
      retry: null,
    };

    // ---- the read-out: time, OHLC and volume of one candle, exact strings ----

    const readout = {};
    for (const [key, label] of [
      ["time", null],
      ["open", "O"],
      ["high", "H"],
      ["low", "L"],
      ["close", "C"],
      ["volume", "Vol"],
      ["ticks", "Ticks"],
    ]) {
      const item = el.readout.appendChild(document.createElement("span"));
      item.className = "item " + key;
      if (label) {
        const name = item.appendChild(document.createElement("span"));
        name.className = "k";
        name.textContent = label;
      }
      readout[key] = item.appendChild(document.createElement("span"));
      readout[key].className = "v";
    }

    function showReadout() {
      const candles = view.candles;
      const list = candles ? candles.list : [];
      const candle =
        (view.hovered !== null && candles && candles.find(view.hovered)) || list[list.length - 1];
      el.readout.dataset.start = candle ? candle.start : "";
      el.readout.classList.toggle("empty", !candle);
      if (!candle) {
        for (const node of Object.values(readout)) node.textContent = "";
        return;
      }
      const p = view.precision;
      readout.time.textContent = formatStart(candle.time, view.interval);
      readout.open.textContent = D.formatPrice(candle.open, p);
      readout.high.textContent = D.formatPrice(candle.high, p);
      readout.low.textContent = D.formatPrice(candle.low, p);
      readout.close.textContent = D.formatPrice(candle.close, p);
      readout.volume.textContent = D.formatGiven(candle.volume);
      readout.ticks.textContent = String(candle.ticks);
      const dir = D.compare(candle.close, candle.open);
      el.readout.dataset.trend = dir > 0 ? "up" : dir < 0 ? "down" : "flat";
    }

    function showStatus(text) {
      el.status.textContent = text;
      el.status.hidden = !text;
    }

    // ---- the chart ----

    function colors() {
      const up = css("--up");
      const down = css("--down");
      return { up, down, upVolume: up + "66", downVolume: down + "66" };
    }

    function chartOptions() {
      return {
        layout: {
          background: { type: "solid", color: css("--card") },
          textColor: css("--muted"),
          fontFamily: getComputedStyle(document.body).fontFamily,
          // The logo would need an inline <style>, which our CSP refuses: the page
          // credits TradingView in its footer instead, as the licence asks.
          attributionLogo: false,
        },
        grid: { vertLines: { color: css("--line") }, horzLines: { color: css("--line") } },
        rightPriceScale: { borderColor: css("--line") },
        timeScale: {
          borderColor: css("--line"),
          timeVisible: view.interval !== "1d",
          secondsVisible: view.interval === "1s",
        },
        // A finger moving up or down the chart scrolls the page, as on any page.
        handleScroll: { vertTouchDrag: false },
      };
    }

    function build(charts) {
      const chart = charts.createChart(el.chart, { autoSize: true, ...chartOptions() });
      view.price = chart.addSeries(charts.CandlestickSeries, {
        ...candleColours(),
        priceLineVisible: true,
      });
      view.price.priceScale().applyOptions({ scaleMargins: { top: 0.08, bottom: 0.28 } });
      view.volume = chart.addSeries(charts.HistogramSeries, {
        priceFormat: { type: "volume" },
        priceScaleId: "", // an overlay at the bottom, under the candles
        lastValueVisible: false,
        priceLineVisible: false,
      });
      view.volume.priceScale().applyOptions({ scaleMargins: { top: 0.78, bottom: 0 } });
      chart.subscribeCrosshairMove((param) => {
        view.hovered = param && param.time !== undefined ? param.time : null;
        showReadout();
      });
      view.chart = chart;
      const scheme = matchMedia("(prefers-color-scheme: dark)");
      scheme.addEventListener("change", recolour);
    }

    function recolour() {
      if (!view.chart) return;
      view.chart.applyOptions(chartOptions());
      view.price.applyOptions(candleColours());
      draw();
    }

    // The candles' colours, from the page's own (they follow the light or dark scheme).
    function candleColours() {
      const c = colors();
      return {
        upColor: c.up,
        downColor: c.down,
        borderUpColor: c.up,
        borderDownColor: c.down,
        wickUpColor: c.up,
        wickDownColor: c.down,
      };
    }

    function bar(candle) {
      return {
        time: candle.time,
        open: Number(candle.open),
        high: Number(candle.high),
        low: Number(candle.low),
        close: Number(candle.close),
      };
    }

    function volumeBar(candle) {
      const c = colors();
      const up = D.compare(candle.close, candle.open) >= 0;
      return {
        time: candle.time,
        value: Number(candle.volume),
        color: up ? c.upVolume : c.downVolume,
      };
    }

    function setPrecision(candles) {
      let p = view.precision;
      for (const c of candles) {
        for (const v of [c.open, c.high, c.low, c.close]) {
          if (D.isDecimal(v)) p = Math.max(p, Math.min(D.decimals(v), MAX_PRECISION));
        }
      }
      if (p === view.precision && view.priceFormatSet) return;
      view.precision = p;
      view.priceFormatSet = true;
      if (view.price) {
        view.price.applyOptions({
          priceFormat: { type: "price", precision: p, minMove: Number(`1e-${p}`) },
        });
      }
    }

    function draw() {
      if (!view.chart || !view.candles) return;
      const list = view.candles.list;
      view.price.setData(list.map(bar));
      view.volume.setData(list.map(volumeBar));
      view.candles.trimmed = false;
      showReadout();
    }

    function drawOne(index) {
      const list = view.candles.list;
      if (index !== list.length - 1 || view.candles.trimmed) {
        draw(); // an older candle changed (a tick stamped in the past): redraw all
        return;
      }
      view.price.update(bar(list[index]));
      view.volume.update(volumeBar(list[index]));
      showReadout();
    }

    // ---- back-fill ----

    async function load(epoch, delay) {
      const url =
        `${candlesUrl}?symbol=${encodeURIComponent(view.symbol)}` +
        `&interval=${encodeURIComponent(view.interval)}`;
      // Every tick that reached the page before this request is in its answer: only
      // those that come while it is on its way need holding (on a retry as well).
      view.candles.held = [];
      try {
        const [charts, response] = await Promise.all([
          loadLibrary(chartsUrl),
          fetch(url, { headers: { Accept: "application/json" } }),
        ]);
        if (epoch !== view.epoch) return;
        if (!view.chart) build(charts);
        const body = await response.json().catch(() => null);
        if (epoch !== view.epoch) return;
        if (!response.ok) {
          const why = body && body.error ? body.error : `the server answered ${response.status}`;
          if (response.status >= 400 && response.status < 500) {
            view.error = why;
            showStatus(`No chart: ${why}`);
            return; // the same question would get the same answer
          }
          throw new Error(why);
        }
        view.chart.applyOptions({ timeScale: chartOptions().timeScale });
        setPrecision(body.candles);
        view.candles.fill(body.candles);
        setPrecision(view.candles.list);
        view.hovered = null;
        draw();
        view.chart.timeScale().fitContent();
        if (view.candles.list.length > 120) {
          const n = view.candles.list.length;
          view.chart.timeScale().setVisibleLogicalRange({ from: n - 120, to: n + 2 });
        }
        showStatus(view.candles.list.length ? "" : "No ticks yet in this interval's window.");
      } catch (err) {
        if (epoch !== view.epoch) return;
        showStatus("Loading the chart… (retrying)");
        view.retry = setTimeout(() => {
          if (epoch === view.epoch) load(epoch, Math.min(delay * 2, 30000));
        }, delay);
      }
    }

    function show(symbol, interval, precision) {
      if (!(interval in INTERVALS)) throw new Error(`unknown interval ${interval}`);
      const same = symbol === view.symbol && interval === view.interval && view.candles;
      el.root.hidden = false;
      if (same) return;
      start(symbol, interval, precision);
    }

    function start(symbol, interval, precision) {
      clearTimeout(view.retry);
      view.epoch += 1;
      view.symbol = symbol;
      view.interval = interval;
      view.candles = new Candles(interval);
      view.error = null;
      view.hovered = null;
      view.precision = Math.min(precision || 0, MAX_PRECISION);
      view.priceFormatSet = false;
      el.symbol.textContent = symbol;
      el.chart.setAttribute("aria-label", `${symbol}: ${interval} candles with volume`);
      for (const button of el.intervals.querySelectorAll("[data-interval]")) {
        button.setAttribute("aria-pressed", String(button.dataset.interval === interval));
      }
      if (view.chart) {
        view.price.setData([]);
        view.volume.setData([]);
      }
      showReadout();
      showStatus("Loading the chart…");
      load(view.epoch, 1000);
    }

    function hide() {
      clearTimeout(view.retry);
      view.epoch += 1;
      view.symbol = null;
      view.interval = null;
      view.candles = null;
      el.root.hidden = true;
    }

    // Every tick the page accepts comes here; only the open symbol's are kept.
    function tick(t) {
      if (!view.candles || t.symbol !== view.symbol) return;
      const index = view.candles.apply(t);
      if (index === null || !view.chart) return;
      setPrecision([view.candles.list[index]]);
      drawOne(index);
    }

    // The log could not resume the page: start the view again from the log.
    function reload() {
      if (view.symbol) start(view.symbol, view.interval, view.precision);
    }

    function snapshot() {
      const candles = view.candles;
      return {
        symbol: view.symbol,
        interval: view.interval,
        ready: Boolean(candles && candles.ready && view.chart),
        error: view.error,
        anchor: candles ? candles.anchor : null,
        candles: candles ? candles.plain() : [],
        drawn: view.chart && candles ? view.price.data().map((b) => ({ ...b })) : [],
        volumes: view.chart && candles ? view.volume.data().map((b) => ({ ...b })) : [],
        readout: el.readout.dataset.start || null,
      };
    }

    // Where a candle is drawn, relative to the chart's box (for tests and the curious).
    function point(start) {
      if (!view.chart || !view.candles) return null;
      const candle = view.candles.list.find((c) => c.start === start);
      if (!candle) return null;
      const x = view.chart.timeScale().timeToCoordinate(candle.time);
      const y = view.price.priceToCoordinate(Number(candle.close));
      return x === null || y === null ? null : { x, y };
    }

    return Object.freeze({
      show,
      hide,
      tick,
      reload,
      snapshot,
      point,
      get symbol() {
        return view.symbol;
      },
      get interval() {
        return view.interval;
      },
    });
  }

  return Object.freeze({ create, INTERVALS, formatStart });
})();
