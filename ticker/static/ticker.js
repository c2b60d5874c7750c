// Minimal live board: one row per symbol, updated from /stream.
"use strict";
(function () {
  const params = new URLSearchParams(location.search);
  const query = params.get("symbols");
  const url = "/stream" + (query ? "?symbols=" + encodeURIComponent(query) : "");
  const body = document.querySelector("#board tbody");
  const state = document.getElementById("state");
  const rows = new Map();

  function row(symbol) {
    let r = rows.get(symbol);
    if (!r) {
      const tr = document.createElement("tr");
      const cells = [0, 1, 2, 3].map(() => tr.appendChild(document.createElement("td")));
      cells[0].textContent = symbol;
      r = { tr, cells, first: null, last: null };
      rows.set(symbol, r);
      body.appendChild(tr);
    }
    return r;
  }

  function show(tick) {
    const r = row(tick.symbol);
    const price = Number(tick.price);
    if (r.first === null) r.first = price;
    const change = price - r.first;
    r.cells[1].textContent = tick.price;
    r.cells[1].className = r.last === null || price === r.last ? "" : price > r.last ? "up" : "down";
    r.cells[2].textContent = (change >= 0 ? "+" : "") + (r.first ? (change / r.first * 100).toFixed(2) : "0.00") + "%";
    r.cells[3].textContent = new Date(tick.ts).toLocaleTimeString();
    r.last = price;
  }

  const source = new EventSource(url);
  const snapshot = (e) => JSON.parse(e.data).ticks.forEach(show);
  source.addEventListener("snapshot", (e) => { snapshot(e); state.textContent = "live"; });
  source.addEventListener("reset", (e) => { snapshot(e); state.textContent = "live (missed data, showing latest)"; });
  source.addEventListener("live", (e) => { state.textContent = "live (caught up " + JSON.parse(e.data).replayed + " ticks)"; });
  source.addEventListener("tick", (e) => show(JSON.parse(e.data)));
  source.addEventListener("busy", () => { state.textContent = "server busy, retrying…"; });
  source.onopen = () => { state.textContent = "catching up…"; };
  source.onerror = () => { state.textContent = "reconnecting…"; };
})();
