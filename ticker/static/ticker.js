// The ticker page: one row per watched symbol, fed by /stream, charts back-filled
// from /api/ticks, 24-hour statistics and stale or closed marks from /api/symbols, and the
// detail view of one symbol (detail.js) with its candles from /api/candles.
//
// No tick is lost or shown twice.  Each chart is a list of events sorted by id.
// Back-fill reads the log up to an anchor id (the resume point, or the head of a
// snapshot or reset) and the stream delivers every event after that anchor, so
// merging the two by id leaves no hole and no duplicate.  The resume point is the
// highest id received; it survives a reload in sessionStorage, the browser's own
// reconnect carries it as Last-Event-ID, and our own reconnect as last_event_id.
// Everything shown goes through textContent or DOM attributes, never innerHTML.
"use strict";
(function () {
  const root = document.getElementById("app");
  const STREAM_URL = root.dataset.streamUrl;
  const SYMBOLS_URL = root.dataset.symbolsUrl;
  const TICKS_URL = root.dataset.ticksUrl;
  const MAX_SYMBOLS = Number(root.dataset.maxSymbols) || 50;
  const STATS_EVERY = 5000; // ms between two reads of /api/symbols (24-hour stats, stale, closed)
  const DEFAULT_INTERVAL = "1m";
  const D = window.TickerDecimal;
  const CHART_POINTS = 500; // events kept per symbol; also the back-fill page size
  const STORE_PREFIX = "ticker:resume:";
  const SVG = "http://www.w3.org/2000/svg";
  const CHART_W = 120;
  const CHART_H = 32;

  const $ = (id) => document.getElementById(id);
  const ui = {
    conn: $("conn"),
    connText: $("conn-text"),
    notice: $("notice"),
    noticeText: $("notice-text"),
    noticeClose: $("notice-close"),
    picker: $("picker"),
    addSelect: $("add-symbol"),
    addButton: $("add-button"),
    board: $("board"),
    empty: $("empty"),
    lastId: $("last-id"),
    detail: $("detail"),
    detailTitle: $("detail-title"),
    detailClose: $("detail-close"),
    intervals: $("intervals"),
  };

  const detail = window.TickerDetail.create({
    el: {
      root: ui.detail,
      symbol: $("detail-symbol"),
      intervals: ui.intervals,
      readout: $("detail-readout"),
      chart: $("detail-chart"),
      status: $("detail-status"),
    },
    candlesUrl: root.dataset.candlesUrl,
    chartsUrl: root.dataset.chartsUrl,
  });

  const state = {
    tracked: [], // every symbol the server tracks, from /api/symbols
    symbols: [], // the watched ones, in the URL's order
    rows: new Map(), // symbol -> row
    lastId: null, // highest event id received: the resume point
    resumedFrom: null, // the id the page's first stream resumed from (after a reload)
    source: null,
    connection: "connecting",
    replayed: 0, // ticks received while catching up (the server's count once live)
    caughtUpAt: 0,
    resets: 0,
    retryTimer: null,
    retryDelay: 1000,
    renderPending: false,
    stats: new Map(), // symbol -> {stats, stale, closed, anchor}, from /api/symbols
    statsTimer: null,
    statsBusy: false,
    detail: null, // the symbol whose detail view is open
    interval: DEFAULT_INTERVAL, // its candles' interval
  };

  // ---- decimals: prices stay strings, arithmetic is exact (decimal.js) ----

  const { decimals, scaled, formatPrice } = D;
  const PRICE_RE = /^\d+(\.\d+)?$/;

  // ---- rows ----

  function makeRow(symbol) {
    const li = document.createElement("li");
    li.className = "row";
    // The row opens the symbol's detail view: a click, or Enter or Space once focused.
    li.tabIndex = 0;
    li.title = `Open the ${symbol} chart`;
    li.setAttribute("aria-controls", "detail");
    const name = li.appendChild(document.createElement("span"));
    name.className = "name";
    const sym = name.appendChild(document.createElement("span"));
    sym.className = "sym";
    sym.textContent = symbol;
    const stale = name.appendChild(document.createElement("span"));
    stale.className = "stale";
    stale.textContent = "stale";
    stale.title = "No tick for several tick intervals";
    stale.hidden = true;
    const closed = name.appendChild(document.createElement("span"));
    closed.className = "closed";
    closed.textContent = "closed";
    closed.title = "The market is closed: no trades until it opens";
    closed.hidden = true;
    const price = li.appendChild(document.createElement("span"));
    price.className = "price";
    price.textContent = "—";
    const change = li.appendChild(document.createElement("span"));
    change.className = "change";
    const stats = li.appendChild(document.createElement("span"));
    stats.className = "stats";
    const cell = (cls, label) => {
      const span = stats.appendChild(document.createElement("span"));
      span.className = "stat " + cls;
      const k = span.appendChild(document.createElement("span"));
      k.className = "k";
      k.textContent = label;
      const v = span.appendChild(document.createElement("span"));
      v.className = "v";
      v.textContent = "—";
      return v;
    };
    const high = cell("high", "H");
    const low = cell("low", "L");
    const volume = cell("volume", "Vol");
    const chart = li.appendChild(document.createElementNS(SVG, "svg"));
    chart.setAttribute("class", "chart");
    chart.setAttribute("viewBox", `0 0 ${CHART_W} ${CHART_H}`);
    chart.setAttribute("preserveAspectRatio", "none");
    chart.setAttribute("role", "img");
    const base = chart.appendChild(document.createElementNS(SVG, "line"));
    base.setAttribute("class", "base");
    const line = chart.appendChild(document.createElementNS(SVG, "polyline"));
    line.setAttribute("class", "line");
    const updated = li.appendChild(document.createElement("time"));
    updated.className = "updated";
    const remove = li.appendChild(document.createElement("button"));
    remove.type = "button";
    remove.className = "remove";
    remove.textContent = "×";
    remove.title = "Stop watching";
    remove.setAttribute("aria-label", "Remove " + symbol);
    remove.addEventListener("click", (e) => {
      e.stopPropagation(); // not a click on the row: it does not open the chart
      watch(state.symbols.filter((s) => s !== symbol), "push");
    });
    li.addEventListener("click", () => openDetail(symbol));
    li.addEventListener("keydown", (e) => {
      if (e.target !== li || (e.key !== "Enter" && e.key !== " ")) return;
      e.preventDefault(); // Space would scroll the page
      openDetail(symbol);
    });
    return {
      symbol,
      points: [], // {id, price, ts, size}, ascending id, no duplicates
      precision: 0,
      epoch: 0, // bumped on reset so a stale back-fill is dropped
      filled: false,
      stats: null, // the 24-hour statistics shown
      shown: null, // the last price drawn, to know which way it moved
      dirty: true,
      el: { li, price, change, chart, base, line, updated, stale, closed, high, low, volume },
    };
  }

  function addPoints(row, ticks) {
    if (!ticks.length) return;
    for (const t of ticks) row.precision = Math.max(row.precision, Math.min(decimals(t.price), 18));
    const points = row.points;
    const newest = points.length ? points[points.length - 1].id : -1;
    const point = (t) => ({ id: t.id, price: t.price, ts: t.ts, size: t.size });
    if (ticks.every((t, i) => t.id > (i ? ticks[i - 1].id : newest))) {
      for (const t of ticks) points.push(point(t));
    } else {
      const byId = new Map(points.map((p) => [p.id, p]));
      for (const t of ticks) byId.set(t.id, point(t));
      row.points = [...byId.values()].sort((a, b) => a.id - b.id);
    }
    if (row.points.length > CHART_POINTS) row.points.splice(0, row.points.length - CHART_POINTS);
    row.dirty = true;
  }

  function clearRow(row) {
    row.points = [];
    row.precision = 0;
    row.epoch += 1;
    row.filled = false;
    row.shown = null;
    row.dirty = true;
  }

  function formatTime(ts) {
    const date = new Date(ts.replace(/(\.\d{3})\d+/, "$1"));
    if (Number.isNaN(date.getTime())) return ts;
    const opts = { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false };
    if (Date.now() - date.getTime() > 20 * 3600 * 1000) {
      return date.toLocaleDateString(undefined, { month: "short", day: "numeric" }) +
        " " + date.toLocaleTimeString(undefined, opts);
    }
    return date.toLocaleTimeString(undefined, opts);
  }

  function flash(li, dir) {
    li.classList.remove("flash-up", "flash-down");
    void li.offsetWidth; // restart the animation when the same direction repeats
    li.classList.add("flash-" + dir);
  }

  // The 24-hour statistics and the stale or closed mark: the decimal strings as they
  // came (digits grouped), staleness and market hours as the server judges them,
  // never guessed here.
  function renderStats(row) {
    const { li, change, stale, closed, high, low, volume } = row.el;
    const known = state.stats.get(row.symbol);
    // The server's figures moved on by the ticks since its answer (candles.js).
    const stats = known
      ? window.TickerCandles.dayStats(known.stats, known.anchor, row.points, Date.now() * 1000)
      : null;
    const isStale = Boolean(known && known.stale);
    stale.hidden = !isStale;
    if (isStale) li.dataset.stale = "true";
    else delete li.dataset.stale;
    const isClosed = Boolean(known && known.closed);
    closed.hidden = !isClosed;
    if (isClosed) li.dataset.closed = "true";
    else delete li.dataset.closed;
    row.stats = stats;
    if (!stats) {
      change.textContent = known ? "—" : "";
      change.title = known ? "No tick in the last 24 hours" : "";
      high.textContent = low.textContent = volume.textContent = "—";
      delete li.dataset.trend;
      return;
    }
    change.textContent = `${D.formatSigned(stats.change)} (${D.formatSigned(stats.change_pct)}%)`;
    change.title = `24 hours: open ${D.formatGiven(stats.open)}, ${stats.ticks} ticks`;
    high.textContent = D.formatGiven(stats.high);
    low.textContent = D.formatGiven(stats.low);
    volume.textContent = D.formatGiven(stats.volume);
    const trend = D.sign(stats.change);
    li.dataset.trend = trend > 0 ? "up" : trend < 0 ? "down" : "flat";
  }

  function renderRow(row) {
    row.dirty = false;
    const { li, price, chart, line, updated } = row.el;
    renderStats(row);
    const points = row.points;
    chart.dataset.points = String(points.length);
    if (!points.length) {
      price.textContent = "—";
      updated.textContent = "";
      line.setAttribute("points", "");
      return;
    }
    const last = points[points.length - 1];
    const p = row.precision;
    price.textContent = formatPrice(last.price, p);
    if (PRICE_RE.test(last.price)) {
      const now = scaled(last.price, p);
      if (row.shown !== null && PRICE_RE.test(row.shown)) {
        const before = scaled(row.shown, p);
        if (now !== before) {
          li.dataset.dir = now > before ? "up" : "down";
          flash(li, li.dataset.dir);
        }
      }
    }
    row.shown = last.price;
    updated.textContent = formatTime(last.ts);
    updated.dateTime = last.ts;
    updated.title = last.ts;
    drawChart(row);
  }

  function drawChart(row) {
    const { chart, base, line } = row.el;
    const values = row.points.map((p) => Number(p.price));
    let lo = Math.min(...values);
    let hi = Math.max(...values);
    if (!(hi > lo)) {
      lo -= 1;
      hi += 1;
    }
    const pad = 2;
    const y = (v) => (CHART_H - pad - ((v - lo) / (hi - lo)) * (CHART_H - 2 * pad)).toFixed(2);
    const step = values.length > 1 ? CHART_W / (values.length - 1) : 0;
    const coords = values.map((v, i) => `${(i * step).toFixed(2)},${y(v)}`);
    if (values.length === 1) coords.push(`${CHART_W},${y(values[0])}`);
    line.setAttribute("points", coords.join(" "));
    base.setAttribute("x1", "0");
    base.setAttribute("x2", String(CHART_W));
    base.setAttribute("y1", y(values[0]));
    base.setAttribute("y2", y(values[0]));
    chart.setAttribute("aria-label", `${row.symbol}: last ${values.length} ticks`);
  }

  // ---- rendering is batched: many ticks during a catch-up, one paint ----

  function schedule() {
    if (state.renderPending) return;
    state.renderPending = true;
    if (document.hidden) setTimeout(render, 500);
    else requestAnimationFrame(render);
  }

  function render() {
    state.renderPending = false;
    for (const row of state.rows.values()) if (row.dirty) renderRow(row);
    renderConnection();
    ui.lastId.textContent = state.lastId === null ? "—" : String(state.lastId);
    persist();
  }

  const CONNECTION_TEXT = {
    connecting: () => "Connecting…",
    "catching-up": () => `Catching up… ${state.replayed} ticks replayed`,
    live: () =>
      state.replayed > 0 && Date.now() - state.caughtUpAt < 30000
        ? `Live · caught up ${state.replayed} missed ticks`
        : "Live",
    reconnecting: () =>
      "Reconnecting…" + (state.lastId === null ? "" : ` (will resume after event ${state.lastId})`),
    busy: () => "Server busy, retrying shortly…",
    idle: () => "Not watching any symbol",
  };

  function renderConnection() {
    ui.conn.dataset.state = state.connection;
    ui.connText.textContent = CONNECTION_TEXT[state.connection]();
  }

  function setConnection(name) {
    state.connection = name;
    renderConnection();
  }

  function showNotice(text) {
    ui.noticeText.textContent = text;
    ui.notice.hidden = false;
  }

  ui.noticeClose.addEventListener("click", () => {
    ui.notice.hidden = true;
  });

  // ---- resume point, kept per symbol set for reloads ----

  function storeKey(symbols) {
    return STORE_PREFIX + [...symbols].sort().join(",");
  }

  function stored(symbols) {
    try {
      const raw = sessionStorage.getItem(storeKey(symbols));
      return raw !== null && /^\d{1,16}$/.test(raw) ? Number(raw) : null;
    } catch {
      return null; // storage disabled: start from a snapshot
    }
  }

  function persist() {
    if (state.lastId === null || !state.symbols.length) return;
    try {
      sessionStorage.setItem(storeKey(state.symbols), String(state.lastId));
    } catch {
      // storage full or disabled: a reload then starts from a snapshot
    }
  }

  // ---- back-fill: the newest ticks up to an anchor id, from the log ----

  async function backfill(row, anchor) {
    const epoch = row.epoch;
    row.filled = true;
    const url = `${TICKS_URL}?symbol=${encodeURIComponent(row.symbol)}` +
      `&before=${anchor + 1}&limit=${CHART_POINTS}`;
    try {
      const response = await fetch(url, { headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(`back-fill answered ${response.status}`);
      const body = await response.json();
      if (row.epoch !== epoch || state.rows.get(row.symbol) !== row) return;
      addPoints(row, body.ticks);
      schedule();
    } catch (err) {
      if (row.epoch !== epoch || state.rows.get(row.symbol) !== row) return;
      setTimeout(() => {
        if (row.epoch === epoch && state.rows.get(row.symbol) === row) backfill(row, anchor);
      }, 2000);
    }
  }

  function backfillAll(anchor) {
    for (const row of state.rows.values()) if (!row.filled) backfill(row, anchor);
  }

  // ---- the stream ----

  function closeStream() {
    if (state.source) state.source.close();
    state.source = null;
    clearTimeout(state.retryTimer);
    state.retryTimer = null;
  }

  function connect(resume) {
    closeStream();
    if (!state.symbols.length) {
      setConnection("idle");
      return;
    }
    let url = `${STREAM_URL}?symbols=${state.symbols.map(encodeURIComponent).join(",")}`;
    if (resume !== null) url += `&last_event_id=${resume}`;
    const es = new EventSource(url);
    state.source = es;
    state.replayed = 0;
    setConnection(resume === null ? "connecting" : "catching-up");
    const on = (name, handler) =>
      es.addEventListener(name, (e) => {
        if (es === state.source) handler(e);
      });
    on("open", () => {
      state.retryDelay = 1000;
      if (state.lastId !== null) {
        state.replayed = 0;
        setConnection("catching-up");
      }
    });
    on("snapshot", onSnapshot);
    on("reset", onReset);
    on("live", onLive);
    on("tick", onTick);
    on("busy", () => setConnection("busy"));
    on("error", () => onError(es));
  }

  function onSnapshot(e) {
    const body = JSON.parse(e.data);
    state.lastId = body.head;
    addTicks(body.ticks);
    backfillAll(body.head);
    state.replayed = 0;
    setConnection("live");
    schedule();
  }

  function onReset(e) {
    const body = JSON.parse(e.data);
    state.resets += 1;
    // The log cannot resume us: what we hold no longer joins what comes next.
    for (const row of state.rows.values()) clearRow(row);
    detail.reload();
    state.lastId = body.head;
    addTicks(body.ticks);
    backfillAll(body.head);
    state.replayed = 0;
    showNotice(
      body.reason === "ahead"
        ? "Missed data, showing latest: the server's log was reset."
        : "Missed data, showing latest: the log no longer holds every tick since you left.",
    );
    setConnection("live");
    schedule();
  }

  function onLive(e) {
    const body = JSON.parse(e.data);
    // lastEventId also counts the id-only keepalives: a position we are caught up to.
    const seen = /^\d{1,16}$/.test(e.lastEventId) ? Number(e.lastEventId) : null;
    if (seen !== null && (state.lastId === null || seen > state.lastId)) state.lastId = seen;
    state.replayed = body.replayed;
    state.caughtUpAt = Date.now();
    setConnection("live");
    setTimeout(schedule, 30500); // drop the "caught up" note
    schedule();
  }

  function onTick(e) {
    const tick = JSON.parse(e.data);
    if (state.lastId !== null && tick.id <= state.lastId) return; // already held
    state.lastId = tick.id;
    if (state.connection === "catching-up") state.replayed += 1;
    addTicks([tick]);
    schedule();
  }

  function addTicks(ticks) {
    for (const tick of ticks) {
      const row = state.rows.get(tick.symbol);
      if (row) addPoints(row, [tick]);
      detail.tick(tick); // the open view keeps the ticks above its anchor
    }
  }

  function onError(es) {
    if (es.readyState === EventSource.CLOSED) {
      // The browser gave up (a non-200 answer): retry ourselves, from our resume point.
      const delay = state.retryDelay * (0.75 + Math.random() / 2);
      state.retryDelay = Math.min(state.retryDelay * 2, 30000);
      setConnection("reconnecting");
      clearTimeout(state.retryTimer);
      state.retryTimer = setTimeout(() => connect(state.lastId), delay);
    } else if (state.connection !== "busy") {
      setConnection("reconnecting"); // the browser retries with Last-Event-ID
    }
  }

  // ---- the watched set: URL, rows, picker ----

  function parseSymbols(raw) {
    const seen = [];
    for (const part of raw.split(",")) {
      const symbol = part.trim().toUpperCase();
      if (symbol && !seen.includes(symbol)) seen.push(symbol);
    }
    return seen;
  }

  function symbolsFromUrl() {
    const query = new URLSearchParams(location.search);
    return query.has("symbols") ? parseSymbols(query.get("symbols")) : null;
  }

  function pageUrl(symbols) {
    let url = `${location.pathname}?symbols=${symbols.map(encodeURIComponent).join(",")}`;
    if (state.detail !== null && symbols.includes(state.detail)) {
      url += `&detail=${encodeURIComponent(state.detail)}&interval=${state.interval}`;
    }
    return url;
  }

  function detailFromUrl() {
    const query = new URLSearchParams(location.search);
    const symbol = query.has("detail") ? query.get("detail").trim().toUpperCase() : null;
    const interval = query.get("interval");
    return { symbol: symbol || null, interval };
  }

  function checked(wanted) {
    if (wanted === null) return state.tracked.slice(0, MAX_SYMBOLS);
    const unknown = wanted.filter((s) => !state.tracked.includes(s));
    const known = wanted.filter((s) => state.tracked.includes(s));
    const problems = [];
    if (unknown.length) problems.push("Not tracked: " + unknown.join(", ") + ".");
    if (known.length > MAX_SYMBOLS) problems.push(`At most ${MAX_SYMBOLS} symbols at once.`);
    if (problems.length) showNotice(problems.join(" "));
    return known.slice(0, MAX_SYMBOLS);
  }

  function watch(symbols, how) {
    const added = symbols.filter((s) => !state.rows.has(s));
    for (const [symbol, row] of state.rows) {
      if (!symbols.includes(symbol)) {
        row.el.li.remove();
        state.rows.delete(symbol);
      }
    }
    for (const symbol of symbols) {
      if (!state.rows.has(symbol)) state.rows.set(symbol, makeRow(symbol));
      ui.board.appendChild(state.rows.get(symbol).el.li); // keeps the URL's order
    }
    const changed = symbols.join(",") !== state.symbols.join(",");
    state.symbols = symbols.slice();
    if (state.detail !== null && !symbols.includes(state.detail)) closeDetail("none");
    if (how === "push" && changed) history.pushState(null, "", pageUrl(symbols));
    if (how === "replace") history.replaceState(null, "", pageUrl(symbols));
    ui.empty.hidden = symbols.length > 0;
    fillPicker();
    if (!changed && state.source) return;
    // Carry the resume point over to the new set: the symbols we keep are whole up to
    // it, and the new ones are back-filled up to it, so the replay after it joins both.
    const resume = state.lastId !== null ? state.lastId : stored(symbols);
    if (state.resumedFrom === null && how === "load") state.resumedFrom = resume;
    state.lastId = resume;
    if (resume !== null) for (const symbol of added) backfill(state.rows.get(symbol), resume);
    connect(resume);
    schedule();
  }

  function fillPicker() {
    const select = ui.addSelect;
    while (select.firstChild) select.firstChild.remove();
    const free = state.tracked.filter((s) => !state.symbols.includes(s));
    for (const symbol of free) {
      const option = document.createElement("option");
      option.value = symbol;
      option.textContent = symbol;
      select.appendChild(option);
    }
    const full = state.symbols.length >= MAX_SYMBOLS;
    if (!free.length || full) {
      const option = select.appendChild(document.createElement("option"));
      option.value = "";
      option.textContent = full ? `At most ${MAX_SYMBOLS} symbols` : "All symbols watched";
    }
    select.disabled = !free.length || full;
    ui.addButton.disabled = !free.length || full;
  }

  ui.picker.addEventListener("submit", (e) => {
    e.preventDefault();
    const symbol = ui.addSelect.value;
    if (symbol && !state.symbols.includes(symbol)) watch([...state.symbols, symbol], "push");
  });

  window.addEventListener("popstate", () => {
    watch(checked(symbolsFromUrl()), "pop");
    const asked = detailFromUrl();
    if (asked.symbol !== null) showDetail(asked.symbol, asked.interval, "pop");
    else closeDetail("none");
  });
  window.addEventListener("pagehide", persist);

  // ---- the detail view: one symbol's candles; the URL names it and its interval ----

  function validInterval(interval) {
    return Object.hasOwn(window.TickerDetail.INTERVALS, interval || "");
  }

  // Show ``symbol``'s view; ``how`` says what the history does: "push" (a new entry,
  // so Back closes it), "replace", or "pop"/"load" (the URL already says it).
  function showDetail(symbol, interval, how) {
    if (!state.rows.has(symbol)) {
      showNotice(`No chart for ${symbol}: it is not watched.`);
      closeDetail("none");
      history.replaceState(null, "", pageUrl(state.symbols));
      return;
    }
    const fixed = validInterval(interval) ? interval : state.interval;
    const cleaned = fixed !== interval;
    const opened = state.detail === null;
    state.detail = symbol;
    state.interval = fixed;
    for (const row of state.rows.values()) {
      if (row.symbol === symbol) row.el.li.setAttribute("aria-current", "true");
      else row.el.li.removeAttribute("aria-current");
    }
    if (how === "push") history.pushState({ detail: true }, "", pageUrl(state.symbols));
    else if (how === "replace" || cleaned) {
      history.replaceState(history.state, "", pageUrl(state.symbols));
    }
    detail.show(symbol, fixed, state.rows.get(symbol).precision);
    if (opened && how === "push") ui.detailTitle.focus();
  }

  function openDetail(symbol) {
    if (state.detail === symbol) {
      ui.detailTitle.focus();
      return;
    }
    showDetail(symbol, state.interval, state.detail === null ? "push" : "replace");
  }

  // ``how``: "back" (the user closes it: go back if we pushed the entry), "replace"
  // (drop it from this entry's URL), or "none" (the URL already says it is closed).
  function closeDetail(how) {
    const symbol = state.detail;
    if (symbol === null) return;
    if (how === "back" && history.state && history.state.detail) {
      history.back(); // popstate closes it
      return;
    }
    // The focus goes back to the row, unless the person had moved it elsewhere.
    const focused = document.activeElement;
    const refocus = !focused || focused === document.body || ui.detail.contains(focused);
    state.detail = null;
    detail.hide();
    const row = state.rows.get(symbol);
    for (const r of state.rows.values()) r.el.li.removeAttribute("aria-current");
    if (how === "back" || how === "replace") {
      history.replaceState(null, "", pageUrl(state.symbols));
    }
    if (row && refocus) row.el.li.focus();
  }

  ui.detailClose.addEventListener("click", () => closeDetail("back"));
  ui.intervals.addEventListener("click", (e) => {
    const button = e.target.closest("[data-interval]");
    if (!button || state.detail === null || button.dataset.interval === state.interval) return;
    // The interval replaces this entry's URL: Back still closes the view.
    showDetail(state.detail, button.dataset.interval, "replace");
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && state.detail !== null && !e.defaultPrevented) closeDetail("back");
  });

  // ---- 24-hour statistics, stale and closed marks, read every few seconds ----

  function takeStats(rows) {
    state.stats = new Map(
      rows.map((r) => [
        r.symbol,
        {
          stats: r.stats || null,
          stale: r.stale === true,
          closed: r.closed === true, // the market is closed: not stale
          anchor: r.tick ? r.tick.id : 0, // the statistics count every tick up to it
        },
      ]),
    );
    for (const row of state.rows.values()) row.dirty = true;
    schedule();
  }

  async function refreshStats() {
    clearTimeout(state.statsTimer);
    if (state.statsBusy) return; // the round under way sets the next one
    state.statsBusy = true;
    if (!document.hidden) {
      try {
        const response = await fetch(SYMBOLS_URL, { headers: { Accept: "application/json" } });
        if (response.ok) takeStats((await response.json()).symbols);
      } catch {
        // the next round tries again; the rows keep what they show
      }
    }
    state.statsBusy = false;
    clearTimeout(state.statsTimer);
    state.statsTimer = setTimeout(refreshStats, STATS_EVERY);
  }

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) refreshStats();
  });

  async function start(delay) {
    try {
      const response = await fetch(SYMBOLS_URL, { headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(`symbols answered ${response.status}`);
      const rows = (await response.json()).symbols;
      state.tracked = rows.map((s) => s.symbol);
      takeStats(rows);
    } catch (err) {
      setConnection("reconnecting");
      setTimeout(() => start(Math.min(delay * 2, 30000)), delay);
      return;
    }
    const wanted = symbolsFromUrl();
    const symbols = checked(wanted);
    const cleaned = wanted !== null && symbols.join(",") !== wanted.join(",");
    watch(symbols, cleaned ? "replace" : "load");
    const asked = detailFromUrl();
    if (asked.symbol !== null) showDetail(asked.symbol, asked.interval, "load");
    state.statsTimer = setTimeout(refreshStats, STATS_EVERY);
  }

  // What the page holds, for tests and the curious: read-only views of the state.
  window.tickerState = Object.freeze({
    get connection() {
      return state.connection;
    },
    get lastId() {
      return state.lastId;
    },
    get resumedFrom() {
      return state.resumedFrom;
    },
    get replayed() {
      return state.replayed;
    },
    get resets() {
      return state.resets;
    },
    get symbols() {
      return state.symbols.slice();
    },
    ids(symbol) {
      const row = state.rows.get(symbol);
      return row ? row.points.map((p) => p.id) : null;
    },
    prices(symbol) {
      const row = state.rows.get(symbol);
      return row ? row.points.map((p) => p.price) : null;
    },
    // The 24-hour statistics the row shows: the server's, and the ticks since.
    stats(symbol) {
      const row = state.rows.get(symbol);
      return row && row.stats ? { ...row.stats } : null;
    },
    // The open detail view: its symbol and interval, its anchor, the candles it holds
    // (exact strings, as /api/candles has them) and the bars the chart draws.
    get detail() {
      return state.detail === null ? null : detail.snapshot();
    },
    detailPoint(start) {
      return detail.point(start);
    },
  });

  start(1000);
})();
