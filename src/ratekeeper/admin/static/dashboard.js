// The ratekeeper dashboard: polls `limiters` and `stats` once a second and draws them.
// Every name and key is put in the page as text (textContent, setAttribute), never as HTML.
"use strict";

(() => {
  const POLL_MS = 1000;
  const RECENT_SECONDS = 10; // the "now /s" column: the average of the last ten seconds
  const WIDTH = 900;
  const HEIGHT = 220;
  const RESULTS = ["allowed", "denied", "shadow_denied", "error"];
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  let updates = 0;

  async function call(path, method) {
    const response = await fetch(path, {
      method: method || "GET",
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
    const body = await response.json().catch(() => ({ error: response.statusText }));
    if (!response.ok) throw new Error(body.error || String(response.status));
    return body;
  }

  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = String(text);
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  function setOptions(select, names, first) {
    const wanted = (first ? [first] : []).concat(names.map((n) => [n, n]));
    const current = Array.from(select.options).map((o) => o.value);
    if (current.join("\u0000") === wanted.map((w) => w[0]).join("\u0000")) return;
    const chosen = select.value;
    select.replaceChildren();
    for (const [value, label] of wanted) {
      const option = document.createElement("option");
      option.value = value;
      option.textContent = label;
      select.appendChild(option);
    }
    if (wanted.some((w) => w[0] === chosen)) select.value = chosen;
  }

  function sum(values) {
    return values.reduce((a, b) => a + b, 0);
  }

  function renderLimiters(list, stats) {
    const body = $("limiters").tBodies[0];
    body.replaceChildren();
    for (const limiter of list) {
      const s = limiter.settings;
      const m = limiter.metrics;
      const live = stats.limiters[limiter.name];
      const row = document.createElement("tr");
      row.dataset.name = limiter.name;
      cell(row, limiter.name);
      cell(row, s.limits);
      cell(row, s.algorithm);
      cell(row, s.store + (limiter.shared ? " (shared, v" + limiter.version + ")" : ""));
      cell(row, m.allowed, "num");
      cell(row, m.denied, "num");
      cell(row, m.shadow_denied, "num");
      cell(row, live ? live.near_limit : 0, "num");
      cell(row, m.store_errors, m.store_errors ? "num warn" : "num");
      let recent = 0;
      if (live) {
        for (const r of RESULTS) recent += sum(live.series[r].slice(-RECENT_SECONDS));
      }
      cell(row, (recent / RECENT_SECONDS).toFixed(1), "num");
      body.appendChild(row);
    }
  }

  function seriesOf(stats, name) {
    const out = {};
    for (const r of RESULTS) out[r] = new Array(stats.seconds).fill(0);
    for (const [limiter, data] of Object.entries(stats.limiters)) {
      if (name && limiter !== name) continue;
      for (const r of RESULTS) data.series[r].forEach((v, i) => { out[r][i] += v; });
    }
    return out;
  }

  function renderChart(stats) {
    const svg = $("chart");
    const series = seriesOf(stats, $("chart-limiter").value);
    const top = Math.max(1, ...RESULTS.map((r) => Math.max(...series[r])));
    svg.replaceChildren();
    for (const share of [0.25, 0.5, 0.75]) {
      const line = document.createElementNS(SVG, "line");
      line.setAttribute("class", "grid");
      line.setAttribute("x1", "0");
      line.setAttribute("x2", String(WIDTH));
      line.setAttribute("y1", String(HEIGHT * share));
      line.setAttribute("y2", String(HEIGHT * share));
      svg.appendChild(line);
    }
    const step = WIDTH / Math.max(1, stats.seconds - 1);
    for (const r of RESULTS) {
      const points = series[r].map(
        (v, i) => (i * step).toFixed(1) + "," + (HEIGHT - 4 - (v / top) * (HEIGHT - 8)).toFixed(1),
      );
      const line = document.createElementNS(SVG, "polyline");
      line.setAttribute("class", r);
      line.setAttribute("id", "line-" + r);
      line.setAttribute("points", points.join(" "));
      line.dataset.total = String(sum(series[r]));
      svg.appendChild(line);
    }
    $("chart-span").textContent = "last " + Math.round(stats.seconds / 60) + " minutes";
    $("chart-max").textContent = "peak " + top + "/s";
  }

  function renderTop(stats) {
    const body = $("top-denied").tBodies[0];
    body.replaceChildren();
    for (const [limiter, data] of Object.entries(stats.limiters)) {
      for (const entry of data.top_denied) {
        const row = document.createElement("tr");
        cell(row, limiter);
        cell(row, entry.key).className = "key";
        cell(row, entry.count, "num");
        body.appendChild(row);
      }
    }
    $("keys-note").textContent = stats.hash_keys
      ? "Keys are shown as their HMAC-SHA256 digests."
      : "";
  }

  async function refresh() {
    try {
      const [list, stats] = await Promise.all([call("limiters"), call("stats")]);
      const names = list.limiters.map((l) => l.name);
      setOptions($("chart-limiter"), names, ["", "all limiters"]);
      setOptions($("key-limiter"), names, null);
      renderLimiters(list.limiters, stats);
      renderChart(stats);
      renderTop(stats);
      updates += 1;
      document.body.dataset.updates = String(updates);
      $("status").className = "status";
      $("status").textContent = "live · updated " + new Date().toLocaleTimeString();
    } catch (error) {
      $("status").className = "status error";
      $("status").textContent = "cannot update: " + error.message;
    }
  }

  function keyPath() {
    const name = $("key-limiter").value;
    const key = $("key-input").value;
    return "limiters/" + encodeURIComponent(name) + "/keys/" + encodeURIComponent(key);
  }

  function show(text) {
    $("key-result").textContent = text;
  }

  async function lookup(event) {
    event.preventDefault();
    try {
      const d = await call(keyPath());
      show(
        (d.allowed ? "would be allowed" : "would be denied") + "\n" +
        "limiter: " + d.limiter + "\nkey: " + d.key + "\n" +
        "remaining: " + d.remaining + " of " + d.limit + " (" + d.policy + ")\n" +
        "reset_after: " + (d.reset_after === null ? "never" : d.reset_after.toFixed(3) + " s") + "\n" +
        "retry_after: " + (d.retry_after === null ? "never" : d.retry_after.toFixed(3) + " s"),
      );
    } catch (error) {
      show("error: " + error.message);
    }
  }

  async function reset() {
    if (!$("key-form").reportValidity()) return;
    try {
      const d = await call(keyPath(), "DELETE");
      show("reset: " + d.limiter + " / " + d.key);
    } catch (error) {
      show("error: " + error.message);
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("key-form").addEventListener("submit", lookup);
    $("reset").addEventListener("click", reset);
    $("chart-limiter").addEventListener("change", refresh);
    refresh();
    setInterval(refresh, POLL_MS);
  });
})();
