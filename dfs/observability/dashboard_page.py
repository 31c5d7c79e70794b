# ruff: noqa: E501, RUF001  (an HTML and JavaScript document, not Python lines)
"""The dashboard page: one self-contained HTML document (no CDN, no external file).

The script fetches ``/api/status`` every ``REFRESH_MS`` and rebuilds the tables with DOM
calls and ``textContent`` only (paths and labels come from users: never ``innerHTML``).
"""

from __future__ import annotations

from typing import Final

REFRESH_MS: Final = 3000

PAGE: Final = (
    """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>dfs dashboard</title>
<style>
:root { --ok:#1a7f37; --warn:#b35900; --crit:#c62828; --info:#0b5cad; --line:#d8dee4;
        --muted:#57606a; --bg:#f6f8fa; }
* { box-sizing: border-box; }
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0;
       background: var(--bg); color: #1f2328; }
header { display: flex; align-items: center; gap: 16px; padding: 12px 20px; background: #24292f;
         color: #fff; }
header h1 { font-size: 18px; margin: 0; }
header .meta { color: #c9d1d9; font-size: 12px; margin-left: auto; }
main { padding: 16px 20px; display: grid; gap: 16px;
       grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); }
section { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 12px 14px;
          overflow-x: auto; }
section.wide { grid-column: 1 / -1; }
h2 { font-size: 15px; margin: 0 0 8px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line);
         white-space: nowrap; }
th { color: var(--muted); font-weight: 600; font-size: 12px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.path { white-space: normal; word-break: break-all; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; color: #fff;
         font-size: 12px; font-weight: 600; }
.ok { background: var(--ok); } .warning { background: var(--warn); }
.critical { background: var(--crit); } .info { background: var(--info); }
.muted { color: var(--muted); }
#health { font-size: 16px; font-weight: 700; padding: 4px 12px; border-radius: 4px; }
ul.warnings { list-style: none; padding: 0; margin: 0; }
ul.warnings li { padding: 4px 0; }
.bar { width: 140px; height: 10px; background: #eaeef2; border-radius: 5px; overflow: hidden;
       display: inline-block; vertical-align: middle; margin-right: 6px; }
.bar > div { height: 100%; background: var(--ok); }
.bar.high > div { background: var(--warn); } .bar.full > div { background: var(--crit); }
.counts { display: flex; flex-wrap: wrap; gap: 10px; }
.count { border: 1px solid var(--line); border-radius: 6px; padding: 6px 12px; min-width: 110px; }
.count b { display: block; font-size: 20px; }
#error { color: var(--crit); font-weight: 600; }
</style>
</head>
<body>
<header>
  <h1>dfs</h1>
  <span id="health" class="info">loading…</span>
  <span id="error"></span>
  <span class="meta">metaserver <b id="node">?</b> · <span id="role">?</span> ·
    updated <span id="updated">never</span> · refreshes every """
    + str(REFRESH_MS // 1000)
    + """ s</span>
</header>
<main>
  <section class="wide"><h2>Health</h2><ul class="warnings" id="warnings"></ul></section>
  <section class="wide"><h2>Counts</h2><div class="counts" id="counts"></div></section>
  <section><h2>Metaservers</h2>
    <table id="metaservers"><thead><tr><th>id</th><th>address</th><th>role</th><th>term</th>
    <th>commit</th><th>applied</th></tr></thead><tbody></tbody></table></section>
  <section><h2>Replication</h2><table id="replication"><tbody></tbody></table></section>
  <section class="wide"><h2>Chunkservers</h2>
    <p class="muted" id="cs-note"></p>
    <table id="chunkservers"><thead><tr><th>id</th><th>address</th><th>zone</th><th>state</th>
    <th>mode</th><th>used</th><th>capacity</th><th>chunks</th><th>heartbeat</th><th>load</th>
    <th>corrupt</th></tr></thead><tbody></tbody></table></section>
  <section class="wide"><h2>Under-replicated and missing chunks</h2>
    <table id="under"><thead><tr><th>path</th><th>chunk</th><th>index</th><th>live / goal</th>
    <th>servers</th></tr></thead><tbody></tbody></table></section>
  <section><h2>Sessions</h2>
    <table id="sessions"><thead><tr><th>id</th><th>kind</th><th>label</th><th>owner</th>
    <th>age</th></tr></thead><tbody></tbody></table></section>
  <section><h2>Locks</h2>
    <table id="locks"><thead><tr><th>path</th><th>session</th><th>kind</th><th>type</th>
    <th>range</th></tr></thead><tbody></tbody></table></section>
</main>
<script>
"use strict";
const REFRESH_MS = """
    + str(REFRESH_MS)
    + """;
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
function bytes(n) {
  if (n === undefined || n === null) return "?";
  const u = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(n)) + " " + u[i];
}
function age(seconds) {
  if (seconds === undefined || seconds === null) return "?";
  if (seconds < 90) return seconds.toFixed(1) + " s";
  if (seconds < 5400) return (seconds / 60).toFixed(0) + " min";
  return (seconds / 3600).toFixed(1) + " h";
}
function fill(id, rows, empty, cols) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren();
  if (!rows.length) {
    const tr = el("tr"); const td = el("td", empty, "muted"); td.colSpan = cols;
    tr.append(td); body.append(tr); return;
  }
  for (const cells of rows) {
    const tr = el("tr");
    for (const c of cells) tr.append(c instanceof Node ? c : el("td", c));
    body.append(tr);
  }
}
function num(v) { return el("td", v, "num"); }
function cell(child, cls) { const td = el("td", null, cls); td.append(child); return td; }
function useBar(used, cap) {
  const frac = cap ? used / cap : 0;
  const bar = el("span", null, "bar" + (frac >= 0.95 ? " full" : frac >= 0.8 ? " high" : ""));
  const inner = el("div"); inner.style.width = Math.min(100, frac * 100).toFixed(1) + "%";
  bar.append(inner);
  const td = el("td"); td.append(bar, el("span", bytes(used) + " (" + (frac * 100).toFixed(0) + " %)"));
  return td;
}
function render(s) {
  const warnings = s.warnings || [];
  const worst = warnings.find(w => w.severity !== "info");
  const health = document.getElementById("health");
  health.className = worst ? worst.severity : "ok";
  health.textContent = !worst ? "HEALTHY" : worst.severity === "critical" ? "CRITICAL" : "DEGRADED";
  document.getElementById("node").textContent = s.node;
  document.getElementById("role").textContent = s.role;
  document.getElementById("updated").textContent = new Date().toLocaleTimeString();
  const ul = document.getElementById("warnings"); ul.replaceChildren();
  if (!warnings.length) ul.append(el("li", "No problems found.", "muted"));
  for (const w of warnings) {
    const li = el("li"); li.append(el("span", w.severity, "badge " + w.severity), " ", w.text);
    ul.append(li);
  }
  const counts = s.counts || {};
  const box = document.getElementById("counts"); box.replaceChildren();
  for (const [k, v] of Object.entries(counts)) {
    const d = el("div", null, "count"); d.id = "count-" + k;
    d.append(el("b", v), el("span", k.replace(/_/g, " "), "muted")); box.append(d);
  }
  fill("metaservers", (s.metaservers || []).map(m => [
    m.id, m.address, cell(el("span", m.role, "badge " + (m.role === "leader" ? "ok" :
      m.role === "unreachable" ? "critical" : "info"))),
    num(m.term), num(m.commit_index), num(m.applied_index)]), "none", 6);
  const r = s.replication || {};
  fill("replication", Object.entries(r).map(([k, v]) => [k.replace(/_/g, " "), num(v)]), "none", 2);
  document.getElementById("cs-note").textContent = s.leader_only_known ?
    "Chunkservers report to the leader only (" + (s.leader || "none") + " at " +
    (s.leader_address || "?") + "); open its dashboard." : "";
  fill("chunkservers", (s.chunkservers || []).map(c => [
    c.id, c.address, c.zone,
    cell(el("span", c.state, "badge " + (c.state === "alive" ? "ok" : c.state === "gone" ? "critical" : "warning"))),
    c.mode || "normal", useBar(c.used, c.capacity), num(bytes(c.capacity)), num(c.chunks), num(age(c.last_heartbeat_age)),
    num(c.load), num(c.bad_replicas)]), s.leader_only_known ? "known to the leader only" : "none registered", 11);
  fill("under", (s.under_replicated || []).map(u => [
    el("td", u.path, "path"), u.chunk_id, num(u.index),
    cell(el("span", u.live + " / " + u.goal, "badge " + (u.live ? "warning" : "critical"))),
    u.servers.join(", ")]), s.leader_only_known ? "known to the leader only" : "none: every chunk is at its goal", 5);
  const nowNs = Date.now() * 1e6;
  fill("sessions", (s.sessions || []).map(x => [
    num(x.id), x.kind, el("td", x.label, "path"), x.owner, num(age((nowNs - x.created_ns) / 1e9))]), "none", 5);
  fill("locks", (s.locks || []).map(l => [
    el("td", l.path, "path"), num(l.session), l.kind, l.type,
    l.start + "–" + (l.end === null || l.end >= 2 ** 63 - 1 ? "EOF" : l.end)]), "none", 5);
}
async function refresh() {
  try {
    const resp = await fetch("api/status", {cache: "no-store"});
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    render(await resp.json());
    document.getElementById("error").textContent = "";
  } catch (e) {
    document.getElementById("error").textContent = "cannot reach the metaserver: " + e.message;
    const health = document.getElementById("health");
    health.className = "critical"; health.textContent = "UNREACHABLE";
  }
}
refresh();
setInterval(refresh, REFRESH_MS);
</script>
</body>
</html>
"""
)
