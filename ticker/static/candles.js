// Candles of one symbol and interval, as /api/candles gives them, kept moving by live
// ticks: the forming candle's close, high, low, volume and count follow each tick.
// And the rows' 24-hour statistics, moved on the same way (dayStats).
//
// No gap and no double count, by the sparklines' anchor rule.  The back-fill is one
// answer of /api/candles, a snapshot of the log: every tick of the symbol up to some id
// is in it, none after.  Its anchor is the largest last_id it holds.  Ticks that reach
// the page while it is being fetched are held, and then only those with an id above the
// anchor are applied; every applied tick moves the anchor, so no tick counts twice.
"use strict";
window.TickerCandles = (function () {
  const D = window.TickerDecimal;
  // Seconds per bucket, aligned to the UTC epoch (1d is the UTC day): the server's
  // own table, which the page's interval buttons carry.
  const INTERVALS = Object.freeze(
    Object.fromEntries(
      [...document.querySelectorAll("#intervals [data-interval]")].map((b) => [
        b.dataset.interval,
        Number(b.dataset.seconds),
      ]),
    ),
  );
  const MAX_CANDLES = 1000; // kept per view; the oldest go first

  const TS_RE = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$/;

  // Microseconds since the epoch of an ISO 8601 time ("…T10:00:00.123456Z"), as the
  // server orders ticks (a Number holds them exactly until the year 2255).
  function micros(ts) {
    const match = TS_RE.exec(ts);
    if (!match) return Date.parse(ts) * 1000;
    const [, base, frac = "", zone] = match;
    return Date.parse(base + zone) * 1000 + Number(frac.padEnd(6, "0").slice(0, 6));
  }

  // A bucket's start written as the server writes them (its fraction digits, if any).
  function isoSeconds(seconds, digits) {
    const text = new Date(seconds * 1000).toISOString().slice(0, 19);
    return text + (digits ? "." + "0".repeat(digits) : "") + "Z";
  }

  class Candles {
    constructor(interval) {
      if (!(interval in INTERVALS)) throw new Error(`unknown interval ${interval}`);
      this.interval = interval;
      this.size = INTERVALS[interval];
      this.list = []; // ascending time; each {time, start, open, ..., openTs, closeTs}
      this.anchor = null; // null until the back-fill is in
      this.held = []; // ticks that came while the back-fill was on its way
      this.trimmed = false;
      this.digits = 6; // fraction digits of a start, as in the back-fill (ticks have six)
    }

    get ready() {
      return this.anchor !== null;
    }

    // The back-fill: the candles of one /api/candles answer, oldest first.
    fill(candles) {
      this.list = candles.map((c) => ({
        ...c,
        time: Math.floor(micros(c.start) / 1e6),
        // The times of the open and close ticks are not in the answer: a live tick is
        // taken as later than the close (sources stamp ticks as they come, so a larger
        // id is a later tick) and never earlier than the open.
        openTs: null,
        closeTs: null,
      }));
      this.anchor = candles.reduce((top, c) => Math.max(top, c.last_id), 0);
      if (candles.length) {
        const match = TS_RE.exec(candles[0].start);
        this.digits = match && match[2] ? match[2].length : 0;
      }
      const held = this.held;
      this.held = [];
      const changed = [];
      for (const tick of held) {
        const index = this.apply(tick);
        if (index !== null) changed.push(index);
      }
      return changed;
    }

    // A live tick: returns the index of the candle it changed, or null when it was
    // already counted (or held until the back-fill is in).
    apply(tick) {
      if (this.anchor === null) {
        this.held.push(tick);
        return null;
      }
      if (tick.id <= this.anchor) return null; // in the back-fill, or applied already
      if (!D.isDecimal(tick.price)) return null;
      this.anchor = tick.id;
      const ts = micros(tick.ts);
      const time = Math.floor(ts / 1e6 / this.size) * this.size;
      const size = D.isDecimal(tick.size) ? tick.size : "0";
      const list = this.list;
      let index = list.length;
      while (index > 0 && list[index - 1].time > time) index -= 1;
      const candle = index > 0 ? list[index - 1] : null;
      if (candle && candle.time === time) {
        if (D.compare(tick.price, candle.high) > 0) candle.high = tick.price;
        if (D.compare(tick.price, candle.low) < 0) candle.low = tick.price;
        if (candle.openTs !== null && ts < candle.openTs) {
          candle.open = tick.price;
          candle.openTs = ts;
        }
        if (candle.closeTs === null || ts >= candle.closeTs) {
          candle.close = tick.price;
          candle.closeTs = ts;
        }
        candle.volume = D.add(candle.volume, size);
        candle.ticks += 1;
        candle.first_id = Math.min(candle.first_id, tick.id); // the smallest and largest ids
        candle.last_id = Math.max(candle.last_id, tick.id);
        return index - 1;
      }
      list.splice(index, 0, {
        time,
        start: isoSeconds(time, this.digits),
        open: tick.price,
        high: tick.price,
        low: tick.price,
        close: tick.price,
        volume: size,
        ticks: 1,
        first_id: tick.id,
        last_id: tick.id,
        openTs: ts,
        closeTs: ts,
      });
      if (list.length > MAX_CANDLES) {
        const dropped = list.length - MAX_CANDLES;
        list.splice(0, dropped);
        this.trimmed = true; // the chart must be redrawn whole
        return Math.max(index - dropped, 0);
      }
      return index;
    }

    find(time) {
      return this.list.find((c) => c.time === time) || null;
    }

    // What the server's answer would hold: the candles without our own bookkeeping.
    plain() {
      return this.list.map(({ time, openTs, closeTs, ...candle }) => candle);
    }
  }

  const DAY_US = 86400e6;

  // A symbol's 24-hour statistics, as /api/symbols gave them (or null), moved on by the
  // ticks that came after them, so that they never lag the last price.  The same anchor
  // rule as the candles: the answer counts every tick up to the symbol's latest tick in
  // it (``anchor``), so only ticks with a larger id are folded in, with the server's own
  // arithmetic: exact decimals, high and low kept as given, change % rounded half away
  // from zero, the window the rolling 24 hours up to the current minute.
  function dayStats(base, anchor, ticks, nowUs) {
    const windowStart = Math.floor(nowUs / 60e6) * 60e6 + 60e6 - DAY_US;
    let stats = base ? { ...base } : null;
    let close = null;
    for (const t of ticks) {
      if (t.id <= anchor || !D.isDecimal(t.price) || micros(t.ts) < windowStart) continue;
      if (!stats) stats = { open: t.price, high: t.price, low: t.price, volume: "0", ticks: 0 };
      if (D.compare(t.price, stats.high) > 0) stats.high = t.price;
      if (D.compare(t.price, stats.low) < 0) stats.low = t.price;
      if (D.isDecimal(t.size)) stats.volume = D.add(stats.volume, t.size);
      stats.ticks += 1;
      close = t.price;
    }
    if (stats && close !== null) {
      stats.change = D.subtract(close, stats.open);
      stats.change_pct = D.percent(stats.change, stats.open);
    }
    return stats;
  }

  return Object.freeze({ INTERVALS, Candles, micros, dayStats });
})();
