// Exact decimals for the page: prices, sizes and statistics stay the strings the
// server sent; comparing, adding and formatting work on scaled BigInts, never floats.
"use strict";
window.TickerDecimal = (function () {
  const PRICE_RE = /^\d+(\.\d+)?$/; // an unsigned decimal, as prices and sizes are
  const SIGNED_RE = /^([+-]?)(\d+)(\.\d+)?$/;

  function isDecimal(value) {
    return typeof value === "string" && PRICE_RE.test(value);
  }

  function decimals(price) {
    const dot = price.indexOf(".");
    return dot < 0 ? 0 : price.length - dot - 1;
  }

  function scaled(price, precision) {
    const [whole, frac = ""] = price.split(".");
    return BigInt(whole + frac.padEnd(precision, "0"));
  }

  function group(digits) {
    return digits.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  }

  function formatScaled(value, precision) {
    const digits = (value < 0n ? -value : value).toString().padStart(precision + 1, "0");
    if (precision === 0) return group(digits);
    return group(digits.slice(0, -precision)) + "." + digits.slice(-precision);
  }

  // A price to a symbol's precision (the most decimals its prices came with).
  function formatPrice(price, precision) {
    return isDecimal(price) ? formatScaled(scaled(price, precision), precision) : price;
  }

  // -1, 0 or 1, as decimals compare (so "10" > "9.99").
  function compare(a, b) {
    const p = Math.max(decimals(a), decimals(b));
    const x = scaled(a, p);
    const y = scaled(b, p);
    return x < y ? -1 : x > y ? 1 : 0;
  }

  // The exact sum, with as many decimals as the longer operand (as Python's Decimal adds).
  function add(a, b) {
    const p = Math.max(decimals(a), decimals(b));
    return formatScaled(scaled(a, p) + scaled(b, p), p).replace(/,/g, "");
  }

  // Signed decimals ("-87.70"), for the 24-hour change: [scaled BigInt, decimals].
  function signed(value) {
    const match = SIGNED_RE.exec(value);
    if (!match) throw new Error(`not a decimal: ${value}`);
    const [, sign, whole, frac = ""] = match;
    const digits = frac.length ? frac.length - 1 : 0;
    const n = BigInt(whole + frac.slice(1));
    return [sign === "-" ? -n : n, digits];
  }

  function writeSigned(n, digits) {
    const text = formatScaled(n, digits).replace(/,/g, "");
    return n < 0n ? "-" + text : text; // a zero difference has no sign, as in Python
  }

  function alignSigned(a, b) {
    const [x, dx] = signed(a);
    const [y, dy] = signed(b);
    const p = Math.max(dx, dy);
    return [x * 10n ** BigInt(p - dx), y * 10n ** BigInt(p - dy), p];
  }

  // a - b, exact, with as many decimals as the longer one (as Python's Decimal does).
  function subtract(a, b) {
    const [x, y, p] = alignSigned(a, b);
    return writeSigned(x - y, p);
  }

  // change / base * 100, rounded half away from zero to two places ("0.13", "-1.64").
  function percent(change, base) {
    const [c, dc] = signed(change);
    const [b, db] = signed(base);
    if (b <= 0n) return null;
    const n = (c < 0n ? -c : c) * 10n ** BigInt(4 + db);
    const d = b * 10n ** BigInt(dc);
    let q = n / d;
    if (2n * (n % d) >= d) q += 1n;
    return writeSigned(c < 0n ? -q : q, 2);
  }

  // A (possibly signed) decimal string as given, digits grouped; "+" when above zero,
  // a real minus sign below.  Anything else is shown as it came.
  function formatSigned(value) {
    const match = typeof value === "string" ? SIGNED_RE.exec(value) : null;
    if (!match) return value === null || value === undefined ? "—" : String(value);
    const [, sign, whole, frac = ""] = match;
    const zero = /^0*$/.test(whole + frac.slice(1));
    const shown = group(whole) + frac;
    if (zero) return shown;
    return (sign === "-" ? "−" : "+") + shown;
  }

  // An unsigned decimal string as given, digits grouped.
  function formatGiven(value) {
    if (!isDecimal(value)) return value === null || value === undefined ? "—" : String(value);
    const dot = value.indexOf(".");
    return dot < 0 ? group(value) : group(value.slice(0, dot)) + value.slice(dot);
  }

  function sign(value) {
    const match = typeof value === "string" ? SIGNED_RE.exec(value) : null;
    if (!match || /^0*$/.test(match[2] + (match[3] || "").slice(1))) return 0;
    return match[1] === "-" ? -1 : 1;
  }

  return Object.freeze({
    isDecimal,
    decimals,
    scaled,
    formatScaled,
    formatPrice,
    compare,
    add,
    subtract,
    percent,
    formatSigned,
    formatGiven,
    sign,
  });
})();
