// distbreaker dashboard. Every value from Redis (names, causes, reasons, actors) is inserted
// with textContent or as an attribute value, never as HTML.
"use strict";

(function () {
  const STATES = ["open", "forced_open", "half_open", "disabled", "closed"]; // problems first
  const SVG = "http://www.w3.org/2000/svg";
  const TOKEN_HEADER = "X-Distbreaker-Token";
  let frame = null;
  let shown = new Set(STATES);
  const tiles = new Map(); // service -> {root, parts}

  const $ = (id) => document.getElementById(id);

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function seconds(s) {
    if (s === null || s === undefined) return "∞";
    if (s <= 0) return "0s";
    if (s < 10) return s.toFixed(1) + "s";
    s = Math.floor(s);
    if (s < 60) return s + "s";
    const m = Math.floor(s / 60);
    if (m < 60) return m + "m " + (s % 60) + "s";
    const h = Math.floor(m / 60);
    return h < 48 ? h + "h " + (m % 60) + "m" : Math.floor(h / 24) + "d " + (h % 24) + "h";
  }

  function ago(t) {
    if (!t || !frame) return "";
    return seconds(Math.max(0, frame.time - t)) + " ago";
  }

  function pct(x) {
    return (100 * x).toFixed(x > 0 && x < 0.1 ? 1 : 0) + "%";
  }

  function parseFor(text) {
    const t = text.trim();
    if (!t) return null;
    const m = /^(\d+(?:\.\d+)?)\s*(s|m|h|d)?$/.exec(t);
    if (!m) throw new Error("for: like 90s, 10m, 2h, 1d (empty: until reset)");
    return parseFloat(m[1]) * { s: 1, m: 60, h: 3600, d: 86400 }[m[2] || "s"];
  }

  // -- token: from the URL fragment once (#token=...), then this tab's sessionStorage -----------
  function takeToken() {
    const hash = new URLSearchParams(location.hash.slice(1));
    const token = hash.get("token");
    if (token) {
      sessionStorage.setItem("distbreaker-token", token);
      history.replaceState(null, "", location.pathname + location.search);
    }
    $("token").value = sessionStorage.getItem("distbreaker-token") || "";
    $("actor").value = localStorage.getItem("distbreaker-actor") || "";
    $("token").addEventListener("change", () => sessionStorage.setItem("distbreaker-token", $("token").value));
    $("actor").addEventListener("change", () => localStorage.setItem("distbreaker-actor", $("actor").value));
  }

  // -- filter -----------------------------------------------------------------------------------
  function buildStateFilter() {
    for (const state of STATES) {
      const label = el("label");
      const box = el("input");
      box.type = "checkbox";
      box.checked = true;
      box.value = state;
      box.dataset.state = state;
      box.addEventListener("change", () => {
        if (box.checked) shown.add(state);
        else shown.delete(state);
        render();
      });
      label.append(box, " ", el("span", "badge state-" + state, state));
      $("states").append(label);
    }
    $("filter").addEventListener("input", render);
    $("sort").addEventListener("change", render);
  }

  function visible(service, state) {
    const q = $("filter").value.trim().toLowerCase();
    return shown.has(state) && (!q || service.toLowerCase().includes(q));
  }

  // -- tiles ------------------------------------------------------------------------------------
  function makeTile(service) {
    const root = el("article", "tile");
    root.dataset.service = service;
    const title = el("h3", null, service);
    const badge = el("span", "badge");
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 100 40");
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    const threshold = document.createElementNS(SVG, "line");
    threshold.setAttribute("x1", "0");
    threshold.setAttribute("x2", "100");
    const line = document.createElementNS(SVG, "polyline");
    svg.append(threshold, line);
    const dl = el("dl");
    const values = {};
    for (const [key, label] of [
      ["rate", "failure rate"],
      ["calls", "calls"],
      ["retry", "retry after"],
      ["opens", "open count"],
      ["since", "since"],
    ]) {
      const dd = el("dd");
      dd.dataset.field = key;
      dl.append(el("dt", null, label), dd);
      values[key] = dd;
    }
    const cause = el("div", "cause");
    root.append(title, badge, svg, dl, cause);
    const buttons = el("div", "buttons");
    for (const action of ["trip", "disable", "reset"]) {
      const b = el("button", null, action);
      b.type = "button";
      b.dataset.action = action;
      b.addEventListener("click", () => openDialog(service, action));
      buttons.append(b);
    }
    root.append(buttons);
    return { root, badge, svg, line, threshold, values, cause, buttons };
  }

  function updateTile(tile, b) {
    const state = b.state;
    tile.root.className = "tile state-" + state;
    tile.root.dataset.state = state;
    tile.badge.className = "badge state-" + state;
    tile.badge.textContent = state;
    const rates = b.rates.length ? b.rates : [b.failure_rate];
    const n = rates.length;
    const points = rates.map((r, i) => ((n === 1 ? 100 : (100 * i) / (n - 1)).toFixed(2) + "," + (40 - 38 * r - 1).toFixed(2)));
    tile.line.setAttribute("points", points.join(" "));
    const y = (40 - 38 * b.failure_rate_threshold - 1).toFixed(2);
    tile.threshold.setAttribute("y1", y);
    tile.threshold.setAttribute("y2", y);
    tile.svg.setAttribute("aria-label", "failure rate, last " + n + " samples");
    tile.values.rate.textContent = pct(b.failure_rate) + " (trips at " + pct(b.failure_rate_threshold) + ")";
    tile.values.calls.textContent = b.calls + " (" + b.failures + " failed, " + b.slow + " slow; min " + b.minimum_calls + ")";
    tile.values.retry.textContent = b.forced_forever ? "until reset" : b.retry_after ? seconds(b.retry_after) : "-";
    tile.values.opens.textContent = String(b.open_count);
    tile.values.since.textContent = b.last_transition ? ago(b.last_transition) : "-";
    tile.cause.textContent = b.cause ? b.cause + (b.actor ? " (" + b.actor + ")" : "") : "";
    tile.cause.title = tile.cause.textContent;
    tile.buttons.hidden = !frame.actions;
  }

  function order(a, b) {
    if ($("sort").value === "problems") {
      const d = STATES.indexOf(a.state) - STATES.indexOf(b.state);
      if (d) return d;
      if (b.failure_rate !== a.failure_rate) return b.failure_rate - a.failure_rate;
    }
    return a.service < b.service ? -1 : a.service > b.service ? 1 : 0;
  }

  // -- render -----------------------------------------------------------------------------------
  function render() {
    if (!frame) return;
    $("target").textContent = (frame.target ? frame.target + " " : "") + "prefix " + frame.prefix;
    const problem = $("problem");
    problem.hidden = frame.ok && !frame.errors.length;
    problem.textContent = frame.problem || (frame.errors.length ? frame.scrape_errors + " scrape errors: " + frame.errors.join("; ") : "");
    $("actionbar").hidden = !frame.actions;

    const counts = {};
    for (const b of frame.breakers) counts[b.state] = (counts[b.state] || 0) + 1;
    $("summary").textContent =
      frame.breakers.length + " breakers" + STATES.filter((s) => counts[s]).map((s) => ", " + counts[s] + " " + s).join("");

    const box = $("tiles");
    const live = new Set();
    const sorted = frame.breakers.slice().sort(order);
    let previous = null;
    for (const b of sorted) {
      live.add(b.service);
      let tile = tiles.get(b.service);
      if (!tile) {
        tile = makeTile(b.service);
        tiles.set(b.service, tile);
      }
      updateTile(tile, b);
      tile.root.hidden = !visible(b.service, b.state);
      const want = previous ? previous.nextSibling : box.firstChild;
      if (want !== tile.root) box.insertBefore(tile.root, want);
      previous = tile.root;
    }
    for (const [service, tile] of tiles) {
      if (!live.has(service)) {
        tile.root.remove();
        tiles.delete(service);
      }
    }
    $("empty").hidden = frame.breakers.length > 0;

    const body = document.querySelector("#timeline tbody");
    const rows = [];
    for (const t of frame.timeline) {
      if (!visible(t.service, t.to) && !visible(t.service, t.from)) continue;
      const tr = el("tr");
      tr.dataset.service = t.service;
      const when = el("td", null, new Date(t.time * 1000).toLocaleTimeString());
      when.title = new Date(t.time * 1000).toISOString();
      const move = el("td");
      move.append(el("span", "to state-" + t.from, t.from), " → ", el("span", "to state-" + t.to, t.to));
      tr.append(when, el("td", null, t.service), move, el("td", "cause", t.cause), el("td", null, t.actor));
      rows.push(tr);
    }
    body.replaceChildren(...rows);
  }

  function setStatus(status, text) {
    const s = $("status");
    s.dataset.status = status;
    s.textContent = text;
  }

  const histories = new Map(); // service -> failure rates, oldest first

  function accept(next) {
    // The event stream sends each sparkline in full once, then only its newest sample.
    for (const b of next.breakers) {
      const rates = next.append ? (histories.get(b.service) || []).concat(b.rates) : b.rates;
      b.rates = rates.slice(-next.history);
      histories.set(b.service, b.rates);
    }
    const live = new Set(next.breakers.map((b) => b.service));
    for (const service of histories.keys()) {
      if (!live.has(service)) histories.delete(service);
    }
    frame = next;
    const stale = next.read_at && next.time - next.read_at > 2 * next.interval;
    setStatus(
      next.ok ? "live" : "error",
      next.ok ? "live" : stale ? "Redis error: as read " + new Date(next.read_at * 1000).toLocaleTimeString() : "Redis error",
    );
    render();
  }

  // -- actions ----------------------------------------------------------------------------------
  let pending = null;

  function openDialog(service, action) {
    pending = { service, action };
    $("acttitle").textContent = action + " " + service;
    $("forrow").hidden = action === "reset";
    $("reason").value = "";
    $("for").value = "";
    $("acterror").hidden = true;
    $("dialog").showModal();
    $("reason").focus();
  }

  async function confirmAction(event) {
    event.preventDefault();
    if (!pending) return;
    const error = $("acterror");
    let body;
    try {
      body = { reason: $("reason").value, for: pending.action === "reset" ? null : parseFor($("for").value) };
    } catch (e) {
      error.textContent = e.message;
      error.hidden = false;
      return;
    }
    if ($("actor").value.trim()) body.actor = $("actor").value.trim();
    const url = "api/breakers/" + encodeURIComponent(pending.service) + "/" + pending.action;
    let reply;
    try {
      reply = await fetch(url, {
        method: "POST",
        headers: { "Content-Type": "application/json", [TOKEN_HEADER]: $("token").value },
        body: JSON.stringify(body),
        credentials: "same-origin",
      });
    } catch (e) {
      error.textContent = "the dashboard did not answer";
      error.hidden = false;
      return;
    }
    const data = await reply.json().catch(() => ({}));
    if (!reply.ok) {
      error.textContent = data.error || "refused (" + reply.status + ")";
      error.hidden = false;
      return;
    }
    $("dialog").close();
    $("actionresult").textContent = data.service + ": " + data.state + " (" + data.cause + ")";
    pending = null;
  }

  // -- data -------------------------------------------------------------------------------------
  function connect() {
    const source = new EventSource("api/stream");
    source.addEventListener("frame", (e) => accept(JSON.parse(e.data)));
    source.addEventListener("error", () => setStatus("connecting", "reconnecting"));
  }

  document.addEventListener("DOMContentLoaded", () => {
    takeToken();
    buildStateFilter();
    $("actform").addEventListener("submit", confirmAction);
    $("actcancel").addEventListener("click", () => $("dialog").close());
    fetch("api/state", { headers: { Accept: "application/json" } })
      .then((r) => r.json())
      .then(accept)
      .catch(() => setStatus("error", "no answer"))
      .finally(connect);
  });
})();
