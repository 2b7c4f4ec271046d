// The status page's script: reads the admin port's JSON views (same origin, relative
// paths, so it also works behind a path prefix such as `kubectl proxy`) and redraws.
// Every value is written with textContent, never parsed as HTML.
"use strict";

const REFRESH_MS = 5000;
const SVG_NS = "http://www.w3.org/2000/svg";
// Points kept per row when the server sends no history (older servers).
const LOCAL_HISTORY_POINTS = 60;
const localHistory = new Map();
let lastSuccess = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  }
  for (const child of children) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

async function getJSON(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok) throw new Error(path + ": HTTP " + response.status);
  return response.json();
}

function isNum(v) {
  return typeof v === "number" && Number.isFinite(v);
}

// What a row measures: the server's `signal`, else guessed from the metric name.
function signalOf(row) {
  if (row.signal) return row.signal;
  const m = String(row.metric || "");
  if (m.startsWith("latency")) return "latency";
  if (m.startsWith("errorrate")) return "errorRate";
  if (m.startsWith("rps")) return "rps";
  if (m.startsWith("queuedepth")) return "queueDepth";
  return "query";
}

// Where a row reads from: the server's `source`, else the query description's prefix.
function sourceOf(row) {
  if (row.source) return row.source;
  const q = String(row.query || "");
  for (const s of ["prometheus", "tempo", "sqs", "otlp"]) {
    if (q.startsWith(s)) return s;
  }
  return "";
}

// ok / no_data / stale / error (pending: not evaluated yet): the server's `state`, else
// derived from the row.
function stateOf(row) {
  if (row.state) return row.state;
  if (row.error) return /no data/i.test(row.error) ? "no_data" : (isNum(row.value) ? "stale" : "error");
  return isNum(row.value) ? "ok" : "no_data";
}

const STATE_TEXT = { ok: "ok", no_data: "no data", stale: "stale", error: "error", pending: "pending" };

function trim(n) {
  return String(Number(n.toPrecision(3)));
}

function formatValue(signal, v) {
  if (!isNum(v)) return "–";
  switch (signal) {
    case "latency":
      return v < 1 ? trim(v * 1000) + " ms" : trim(v) + " s";
    case "errorRate":
      return trim(v * 100) + " %";
    case "rps":
      return trim(v) + "/s";
    case "queueDepth":
      return Math.round(v) + " msgs";
    default:
      return trim(v);
  }
}

function formatSeconds(seconds) {
  if (seconds < 90) return Math.round(seconds) + " s";
  if (seconds < 5400) return Math.round(seconds / 60) + " min";
  return Math.round(seconds / 3600) + " h";
}

function formatAge(seconds) {
  if (!isNum(seconds)) return "–";
  if (seconds < 1) return "now";
  return formatSeconds(seconds) + " ago";
}

// The age of the backend answer behind a value, when that value was served.
function formatValueAge(seconds) {
  return "value " + (seconds < 1 ? "fresh" : formatSeconds(seconds) + " old") + " when served";
}

function rowKey(row) {
  return row.namespace + "/" + row.scaledObject + "/" + row.metric;
}

// The row's history as [unixSeconds, value|null] pairs: the server's, else the values
// this page has seen since it was opened.
function historyOf(row) {
  if (Array.isArray(row.history)) return row.history;
  const key = rowKey(row);
  const points = localHistory.get(key) || [];
  points.push([Date.now() / 1000, isNum(row.value) ? row.value : null]);
  while (points.length > LOCAL_HISTORY_POINTS) points.shift();
  localHistory.set(key, points);
  return points;
}

function sparkline(history, threshold, label) {
  const width = 140;
  const height = 32;
  const pad = 3;
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("class", "sparkline");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("viewBox", "0 0 " + width + " " + height);
  svg.setAttribute("role", "img");
  const title = document.createElementNS(SVG_NS, "title");
  svg.append(title);
  const points = history.filter((p) => Array.isArray(p) && isNum(p[0]));
  const values = points.map((p) => p[1]).filter(isNum);
  svg.setAttribute("data-points", String(values.length));
  if (values.length === 0) {
    title.textContent = label + ": no values yet";
    return svg;
  }
  title.textContent = label + ": " + values.length + " values over the last " +
    Math.max(1, Math.round((points[points.length - 1][0] - points[0][0]) / 60)) + " min";
  const t0 = points[0][0];
  const t1 = points[points.length - 1][0];
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  if (isNum(threshold) && threshold <= hi * 1.5 && threshold >= lo / 1.5) {
    lo = Math.min(lo, threshold);
    hi = Math.max(hi, threshold);
  }
  if (lo === hi) {
    lo -= Math.abs(lo) * 0.1 + 1e-9;
    hi += Math.abs(hi) * 0.1 + 1e-9;
  }
  const x = (t) => pad + (t1 === t0 ? width - 2 * pad : ((t - t0) / (t1 - t0)) * (width - 2 * pad));
  const y = (v) => height - pad - ((v - lo) / (hi - lo)) * (height - 2 * pad);
  if (isNum(threshold) && threshold >= lo && threshold <= hi) {
    const line = document.createElementNS(SVG_NS, "line");
    line.setAttribute("class", "threshold");
    line.setAttribute("x1", pad);
    line.setAttribute("x2", width - pad);
    line.setAttribute("y1", y(threshold).toFixed(1));
    line.setAttribute("y2", y(threshold).toFixed(1));
    svg.append(line);
  }
  // A gap (null) ends a segment: no value is drawn where there was none.
  let segment = [];
  const flush = () => {
    if (segment.length === 1) {
      const dot = document.createElementNS(SVG_NS, "circle");
      dot.setAttribute("cx", segment[0][0]);
      dot.setAttribute("cy", segment[0][1]);
      dot.setAttribute("r", "1.8");
      svg.append(dot);
    } else if (segment.length > 1) {
      const line = document.createElementNS(SVG_NS, "polyline");
      line.setAttribute("points", segment.map((p) => p.join(",")).join(" "));
      svg.append(line);
    }
    segment = [];
  };
  for (const [t, v] of points) {
    if (isNum(v)) segment.push([x(t).toFixed(1), y(v).toFixed(1)]);
    else flush();
  }
  flush();
  return svg;
}

function signalRow(row) {
  const signal = signalOf(row);
  const source = sourceOf(row);
  const state = stateOf(row);
  const nameCell = el(
    "td",
    null,
    el("div", { class: "name" }, row.scaledObject),
    el("div", { class: "metric" }, row.metric),
    el("div", { class: "query", title: "What this trigger asks its backend" }, row.query || ""),
  );
  const kindCell = el(
    "td",
    null,
    el("span", { class: "tag" }, signal),
    source ? el("span", { class: "tag" }, source) : null,
  );
  const valueCell = el("td", { class: "num value" }, formatValue(signal, row.value));
  const thresholdCell = el(
    "td",
    { class: "num" },
    el("div", { class: "threshold" }, formatValue(signal, row.threshold)),
    el("div", { class: "sub" }, "activation " + formatValue(signal, row.activationThreshold)),
  );
  const activeCell = el(
    "td",
    null,
    row.active === true
      ? el("span", { class: "active-yes" }, "active")
      : row.active === false
        ? el("span", { class: "active-no" }, "inactive")
        : el("span", { class: "active-no" }, "–"),
  );
  const stateCell = el(
    "td",
    null,
    el("span", { class: "state state-" + state }, STATE_TEXT[state] || state),
    el(
      "div",
      { class: "sub age" },
      [
        isNum(row.valueAgeSeconds) ? formatValueAge(row.valueAgeSeconds) : null,
        isNum(row.askedSecondsAgo) ? "KEDA asked " + formatAge(row.askedSecondsAgo) : null,
      ].filter(Boolean).join(" · "),
    ),
    row.error ? el("div", { class: "error" }, row.error) : null,
  );
  const sparkCell = el("td", null, sparkline(historyOf(row), row.threshold, row.scaledObject + " " + row.metric));
  return el(
    "tr",
    {
      "data-scaled-object": row.namespace + "/" + row.scaledObject,
      "data-metric": row.metric,
      "data-state": state,
    },
    nameCell,
    kindCell,
    valueCell,
    thresholdCell,
    activeCell,
    stateCell,
    sparkCell,
  );
}

function renderSignals(rows) {
  const container = document.getElementById("namespaces");
  const byNamespace = new Map();
  for (const row of rows) {
    if (!byNamespace.has(row.namespace)) byNamespace.set(row.namespace, []);
    byNamespace.get(row.namespace).push(row);
  }
  const counts = {};
  for (const row of rows) counts[stateOf(row)] = (counts[stateOf(row)] || 0) + 1;
  document.getElementById("summary").textContent = rows.length === 0
    ? ""
    : rows.length + " metrics: " + Object.entries(counts).map(([s, n]) => n + " " + (STATE_TEXT[s] || s)).join(", ");
  const sections = [];
  for (const namespace of [...byNamespace.keys()].sort()) {
    const head = el(
      "thead",
      null,
      el(
        "tr",
        null,
        el("th", { scope: "col" }, "ScaledObject / metric / query"),
        el("th", { scope: "col" }, "Signal"),
        el("th", { scope: "col" }, "Value"),
        el("th", { scope: "col" }, "Threshold"),
        el("th", { scope: "col" }, "Active"),
        el("th", { scope: "col" }, "State"),
        el("th", { scope: "col" }, "Last minutes"),
      ),
    );
    const body = el("tbody", null, ...byNamespace.get(namespace).map(signalRow));
    sections.push(
      el(
        "section",
        { class: "namespace", "data-namespace": namespace },
        el("h3", null, "namespace " + namespace),
        el("table", null, head, body),
      ),
    );
  }
  if (sections.length === 0) {
    sections.push(el("p", { class: "empty" }, "No ScaledObject has asked this scaler anything yet."));
  }
  container.replaceChildren(...sections);
}

function renderBackends(rows) {
  const body = document.getElementById("backend-rows");
  if (rows.length === 0) {
    body.replaceChildren(el("tr", null, el("td", { colspan: "6", class: "empty" }, "No backend called yet.")));
    return;
  }
  body.replaceChildren(
    ...rows.map((b) => {
      const ratio = isNum(b.recentErrorRatio) ? trim(b.recentErrorRatio * 100) + " %" : "–";
      const failing = isNum(b.recentErrorRatio) && b.recentErrorRatio > 0;
      return el(
        "tr",
        { "data-backend": b.backend },
        el("td", { class: "name" }, b.backend),
        el("td", null, b.lastSuccessSecondsAgo === null ? "never" : formatAge(b.lastSuccessSecondsAgo)),
        el("td", { class: "num" + (failing ? " error" : "") }, ratio + " of " + b.recentCalls),
        el(
          "td",
          { class: "num" },
          formatValue("latency", b.recentLatencyP50Seconds) + " / " + formatValue("latency", b.recentLatencyMaxSeconds),
        ),
        el("td", { class: "num" }, String(b.callsTotal)),
        el(
          "td",
          null,
          isNum(b.lastFailureSecondsAgo)
            ? b.lastFailureOutcome + ", " + formatAge(b.lastFailureSecondsAgo)
            : "none",
        ),
      );
    }),
  );
}

function renderStore(s) {
  const set = (id, text) => {
    document.getElementById(id).textContent = text;
  };
  set("store-series", String(s.series));
  set("store-rate", isNum(s.spansPerSecond) ? trim(s.spansPerSecond) : "–");
  set("store-refused-rate", isNum(s.rejectedPerSecond) ? trim(s.rejectedPerSecond) : "–");
  set("store-accepted", String(s.spansAccepted));
  set("store-refused", String(s.spansRejected));
  set("store-evicted", String(s.seriesEvicted));
}

async function refresh() {
  const updated = document.getElementById("updated");
  try {
    const [signals, backends, store] = await Promise.all([
      getJSON("debug/signals"),
      getJSON("debug/backends"),
      getJSON("debug/store"),
    ]);
    renderSignals(signals);
    renderBackends(backends);
    renderStore(store);
    lastSuccess = new Date();
    updated.className = "";
    updated.textContent = "Updated " + lastSuccess.toLocaleTimeString();
  } catch (e) {
    updated.className = "failing";
    updated.textContent = "Cannot reach the scaler (" + e.message + ")" +
      (lastSuccess ? "; showing data from " + lastSuccess.toLocaleTimeString() : "");
  } finally {
    document.body.setAttribute("data-refreshed", String(Date.now()));
    setTimeout(refresh, REFRESH_MS);
  }
}

refresh();
