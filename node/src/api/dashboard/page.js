"use strict";
// Everything comes from the node's own JSON endpoints (same origin); nothing else is
// loaded. Each refresh renders what it got; a failed fetch leaves the last figures.
const REFRESH_MS = 5000;
const $ = (id) => document.getElementById(id);
const fmt = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));
function setFigure(id, value, text) {
  const el = $(id);
  el.dataset.value = String(value);
  el.textContent = text === undefined ? fmt(value) : text;
}
function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}
function fillRows(tbody, rows) {
  tbody.replaceChildren(...rows.map((cells) => {
    const tr = document.createElement("tr");
    tr.append(...cells);
    return tr;
  }));
}
async function getJson(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
}
function when(unixSecs) {
  if (!unixSecs) return "–";
  const s = Math.round(unixSecs - Date.now() / 1000);
  return s <= 0 ? "now" : s < 120 ? "in " + s + " s" : "in " + Math.round(s / 60) + " min";
}
function renderStats(s) {
  $("peer").textContent = s.peer_id + (s.p2p ? "" : " (local only)");
  const h = $("health");
  h.textContent = s.degraded ? "degraded: " + s.degraded : "healthy";
  h.className = "pill " + (s.degraded ? "bad" : "ok");
  setFigure("members", s.members);
  setFigure("connected", s.connected_peers);
  setFigure("saved", s.api_calls_saved);
  setFigure("hitrate", s.hit_rate, (100 * s.hit_rate).toFixed(1) + " %");
  setFigure("upstream", s.upstream_calls);
  setFigure("entries", s.entries);
  const outcomes = [
    ["hit", s.hits, "fresh, fetched by this node"],
    ["peer", s.peer_hits, "fresh, came from a peer"],
    ["coalesced", s.coalesced, "joined a fetch in flight"],
    ["revalidated", s.revalidated, "304, no quota spent"],
    ["stale", s.stale_served, "served while GitHub refused or failed"],
    ["miss", s.misses, "fetched, quota spent"],
    ["bypass", s.bypass, "not cacheable, passed through"],
    ["held", s.upstream_held, "refused locally: rate limit held"],
  ];
  fillRows($("outcomes").tBodies[0], outcomes.map(([name, n, what]) =>
    [cell(name), cell(fmt(n), "n"), cell(what, "dim")]));
  // The fleet's ledger (`rate_limits`) when the node reports one; else the node's own.
  const budgets = Array.isArray(s.rate_limits) ? s.rate_limits
    : s.rate_limit && s.rate_limit.remaining !== null && s.rate_limit.remaining !== undefined
      ? [{ budget: "this node's token", resource: s.rate_limit.resource || "core",
           limit: s.rate_limit.limit, remaining: s.rate_limit.remaining,
           reset: s.rate_limit.reset, source: "local" }]
      : [];
  const rows = budgets.map((b) => [cell(b.budget), cell(b.resource),
    cell(fmt(b.remaining) + " of " + fmt(b.limit), "n"), cell(when(b.reset)),
    cell(b.source === "fleet" ? "the fleet" : "this node")]);
  if (!rows.length) rows.push([cell("GitHub has not told this node a budget yet", "dim")]);
  fillRows($("budgets").tBodies[0], rows);
}
function renderPeers(peers) {
  const rows = peers.map((p) => {
    const addr = (p.addrs || [])[0] || "";
    return [cell(p.peer_id), cell(p.member ? "yes" : "no"), cell(p.in_mesh ? "yes" : "no"),
      cell(p.connection), cell(p.transport),
      cell(p.member ? p.reachability : "", p.reachability === "public" ? "" : "dim"), cell(addr)];
  });
  if (!rows.length) rows.push([cell("no peer connected", "dim")]);
  fillRows($("peers").tBodies[0], rows);
}
function renderHistory(h) {
  const svg = $("chart");
  const pts = h.samples || [];
  const steps = [];
  for (let i = 1; i < pts.length; i++) {
    steps.push({ t: pts[i].t,
      saved: Math.max(0, pts[i].api_calls_saved - pts[i - 1].api_calls_saved),
      spent: Math.max(0, pts[i].upstream_calls - pts[i - 1].upstream_calls) });
  }
  const end = pts.length ? pts[pts.length - 1].t : Date.now();
  const start = end - 3600 * 1000;
  const top = Math.max(1, ...steps.map((s) => Math.max(s.saved, s.spent)));
  // One pair of bars per sample step: saved (green) and spent (red) side by side,
  // each as wide as a step (at least a pixel) and ending at the step's time.
  const width = Math.max(2, 720 * (h.interval_ms || 10000) / (3600 * 1000));
  const x = (t) => 720 * (t - start) / (3600 * 1000);
  const bars = [];
  const colors = getComputedStyle(document.documentElement);
  for (const s of steps.filter((s) => s.t >= start)) {
    for (const [key, color, shift] of [["saved", "--saved", 1], ["spent", "--spent", 0.5]]) {
      if (!s[key]) continue;
      const r = document.createElementNS("http://www.w3.org/2000/svg", "rect");
      const height = 150 * s[key] / top;
      r.setAttribute("x", (x(s.t) - width * shift).toFixed(1));
      r.setAttribute("width", (width / 2).toFixed(1));
      r.setAttribute("y", (158 - height).toFixed(1));
      r.setAttribute("height", height.toFixed(1));
      r.setAttribute("fill", colors.getPropertyValue(color).trim());
      r.setAttribute("class", key);
      bars.push(r);
    }
  }
  svg.replaceChildren(...bars);
  svg.dataset.samples = String(pts.length);
  $("chartnote").textContent = pts.length < 2
    ? "the chart fills in as the node samples its figures (every " + h.interval_ms / 1000 + " s)"
    : "peak " + fmt(top) + " per sample, " + pts.length + " samples";
}
async function refresh() {
  try {
    const [stats, peers, history] = await Promise.all(
      [getJson("/_ghmesh/stats"), getJson("/_ghmesh/peers"), getJson("/_ghmesh/history")]);
    renderStats(stats);
    renderPeers(peers);
    renderHistory(history);
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
    document.documentElement.dataset.rendered = "1";
  } catch (e) {
    $("updated").textContent = "cannot reach the node: " + e.message;
  }
}
refresh();
setInterval(refresh, REFRESH_MS);
