// sluice console: a read-only view of one broker, drawn from the admin API's JSON routes
// (runtime/src/console/mod.rs). No framework and no build step: each view is a function that
// fetches what it shows and returns HTML; views that change while you look are redrawn
// every two seconds.
"use strict";

const main = document.getElementById("main");
const live = document.getElementById("live");
const REFRESH_MS = 2000;

// The admin API's token, when it has one: from ?token=... once, then kept for the tab.
(function takeToken() {
  const q = new URLSearchParams(location.search);
  if (q.has("token")) {
    sessionStorage.setItem("sluice-token", q.get("token"));
    history.replaceState(null, "", location.pathname + location.hash);
  }
})();

class Unauthorized extends Error {}

async function api(path) {
  const headers = {};
  const token = sessionStorage.getItem("sluice-token");
  if (token) headers.Authorization = "Bearer " + token;
  const r = await fetch(path, { headers, cache: "no-store" });
  if (r.status === 401) throw new Unauthorized();
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || r.status + " " + r.statusText);
  return body;
}

// ---------------------------------------------------------------- formatting
function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}
function num(n) {
  if (n === null || n === undefined) return "–";
  return Number(n).toLocaleString("en-US", { maximumFractionDigits: n < 10 ? 1 : 0 });
}
function bytes(n) {
  if (n === null || n === undefined) return "–";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}
function time(ms) {
  if (ms === null || ms === undefined || ms < 0) return "–";
  return new Date(ms).toISOString().replace("T", " ").replace("Z", "");
}
function link(hash, text) { return `<a href="#${esc(hash)}">${esc(text)}</a>`; }
function enc(s) { return encodeURIComponent(s); }
function tag(text, kind) { return `<span class="tag ${kind || ""}">${esc(text)}</span>`; }
function statusTag(s) {
  const kind = /running|stable/i.test(s) ? "ok" : /error|failed|dead|stopped/i.test(s) ? "bad" : "warn";
  return tag(s, kind);
}

// A key or value as the API sends it: {text}, {base64} or null. JSON is pretty-printed.
function payload(v) {
  if (v === null || v === undefined) return '<span class="muted">null</span>';
  let body;
  if (v.text !== undefined) {
    body = v.text;
    const t = body.trim();
    if (t.startsWith("{") || t.startsWith("[")) {
      try { body = JSON.stringify(JSON.parse(t), null, 2); } catch (_) { /* not JSON after all */ }
    }
    body = `<pre class="json">${esc(body)}</pre>`;
  } else {
    body = `<pre><span class="muted">base64:</span> ${esc(v.base64)}</pre>`;
  }
  return body + (v.truncated ? `<span class="muted">(first ${bytes(64 * 1024)} of ${bytes(v.size)})</span>` : "");
}

function table(cols, rows, attrs, empty) {
  const head = cols.map(c => `<th class="${c.num ? "num" : ""} ${c.narrow ? "hide-narrow" : ""}">${esc(c.title)}</th>`).join("");
  const body = rows.length
    ? rows.map(r => `<tr class="${r._class || ""}">` + cols.map(c =>
        `<td class="${c.num ? "num" : ""} ${c.narrow ? "hide-narrow" : ""}">${c.html ? c.html(r) : esc(r[c.key])}</td>`).join("") + "</tr>").join("")
    : `<tr><td colspan="${cols.length}" class="muted">${esc(empty || "nothing yet")}</td></tr>`;
  return `<div class="table-wrap"><table ${attrs || ""}><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table></div>`;
}

// A line chart of one or more series over the history's points, as inline SVG.
function chart(title, points, series, fmt) {
  const W = 600, H = 120;
  const values = series.map(s => points.map(s.get));
  const max = Math.max(1, ...values.flat());
  const t0 = points.length ? points[0].t : 0, t1 = points.length ? points[points.length - 1].t : 1;
  const x = t => ((t - t0) / Math.max(1, t1 - t0)) * W;
  const y = v => H - (v / max) * (H - 6) - 2;
  const lines = values.map((vs, i) =>
    `<polyline class="${series[i].cls}" points="${vs.map((v, j) => x(points[j].t).toFixed(1) + "," + y(v).toFixed(1)).join(" ")}"/>`).join("");
  const grid = [0.25, 0.5, 0.75].map(f => `<line class="grid" x1="0" x2="${W}" y1="${y(max * f)}" y2="${y(max * f)}"/>`).join("");
  const last = values.map(vs => vs.length ? vs[vs.length - 1] : 0);
  const legend = series.map((s, i) => `<span><i class="${s.cls}"></i>${esc(s.name)} ${fmt(last[i])}</span>`).join("");
  const span = points.length > 1 ? `last ${Math.round((t1 - t0) / 60000) || "<1"} min` : "collecting…";
  return `<div class="chart" data-chart="${esc(title)}"><h3>${esc(title)} <span class="muted">· ${span} · max ${fmt(max)}</span></h3>
    <svg viewBox="0 0 ${W} ${H}" preserveAspectRatio="none" role="img" aria-label="${esc(title)}">${grid}${lines}</svg>
    <div class="legend">${legend}</div></div>`;
}
const perSec = v => num(v) + "/s";
const bytesPerSec = v => bytes(v) + "/s";

// ---------------------------------------------------------------- views
// Each view returns { html, refresh }: refresh true means redraw every REFRESH_MS.

async function overview() {
  const [o, h] = await Promise.all([api("/v1/overview"), api("/v1/history")]);
  const p = h.points;
  const cards = [
    ["topics", num(o.topics)], ["partitions", num(o.partitions)], ["on disk", bytes(o.size_bytes)],
    ["groups", num(o.groups)], ["pipelines", o.pipelines === null ? "–" : num(o.pipelines)],
    ["connections", num(o.connections)], ["requests", num(o.requests)],
  ].map(([l, n]) => `<div class="card"><div class="n">${n}</div><div class="l">${l}</div></div>`).join("");
  return {
    refresh: true,
    html: `<h1>Broker <span class="muted">${esc(o.cluster_id)} · node ${esc(o.node_id)} · v${esc(o.version)}</span></h1>
      <div class="cards" data-testid="overview-cards">${cards}</div>
      <h2>Last minutes</h2>
      <div class="charts">
        ${chart("Records", p, [{ name: "produced", cls: "s1", get: q => q.records_in_per_s }, { name: "fetched by clients", cls: "s2", get: q => q.records_out_per_s }], perSec)}
        ${chart("Bytes", p, [{ name: "produced", cls: "s1", get: q => q.bytes_in_per_s }, { name: "fetched by clients", cls: "s2", get: q => q.bytes_out_per_s }], bytesPerSec)}
        ${chart("Requests", p, [{ name: "requests", cls: "s1", get: q => q.requests_per_s }], perSec)}
        ${chart("Connections", p, [{ name: "open", cls: "s4", get: q => q.connections }], num)}
        ${chart("Memory (RSS)", p, [{ name: "rss", cls: "s3", get: q => q.rss_bytes }], bytes)}
      </div>
      <p class="muted">Data directory <code>${esc(o.data_dir)}</code></p>`,
  };
}

async function topics(params) {
  const list = await api("/v1/topics");
  const filter = (params.get("q") || "").toLowerCase();
  const rows = list.filter(t => t.name.toLowerCase().includes(filter));
  return {
    refresh: false,
    html: `<h1>Topics <span class="muted">${list.length}</span></h1>
      <input type="search" placeholder="filter topics" value="${esc(filter)}" data-filter="topics">
      ${table([
        { title: "topic", html: t => link("/topics/" + enc(t.name), t.name) + (t.compacted ? " " + tag("compacted") : "") },
        { title: "partitions", key: "partitions", num: true },
        { title: "records", num: true, html: t => num(t.records) },
        { title: "size", num: true, html: t => bytes(t.size_bytes) },
        { title: "produced", num: true, narrow: true, html: t => num(t.records_in) },
        { title: "fetched by clients", num: true, narrow: true, html: t => num(t.records_out) },
      ], rows, 'data-testid="topics"')}`,
  };
}

async function topic(name, params) {
  const t = await api("/v1/topics/" + enc(name));
  const partition = Number(params.get("p") || 0);
  const from = params.get("from") || "end";
  const at = params.get("at") || "";
  const max = Number(params.get("max") || 20);
  let query = `partition=${partition}&max=${max}`;
  if (from === "end") query += `&offset=-${max}`;
  else if (from === "beginning") query += `&offset=0`;
  else if (from === "offset") query += `&offset=${enc(at || 0)}`;
  else if (from === "time") query += `&time=${enc(Date.parse(at.endsWith("Z") || /[+-]\d\d:?\d\d$/.test(at) ? at : at + "Z") || 0)}`;
  let msgs, msgError = "";
  try { msgs = await api(`/v1/topics/${enc(name)}/messages?${query}`); } catch (e) { if (e instanceof Unauthorized) throw e; msgError = e.message; }
  const showAll = params.get("configs") === "all";
  const configs = t.configs.filter(c => showAll || !c.default).map(c => ({ ...c, _class: c.default ? "" : "override" }));
  const opts = t.partitions.map(p => `<option value="${p.partition}" ${p.partition === partition ? "selected" : ""}>${p.partition}</option>`).join("");
  const fromOpts = [["end", "newest"], ["beginning", "oldest"], ["offset", "offset"], ["time", "time (UTC)"]]
    .map(([v, l]) => `<option value="${v}" ${v === from ? "selected" : ""}>${l}</option>`).join("");
  const records = msgs ? msgs.records : [];
  const undecodable = msgs && msgs.undecodable.length
    ? `<p class="error">${msgs.undecodable.map(u => `offsets ${u.base_offset}–${u.last_offset} cannot be decoded: ${esc(u.error)}`).join("<br>")}</p>` : "";
  return {
    refresh: false,
    html: `<h1>${esc(t.name)} <span class="muted">${t.partitions.length} partitions · id ${esc(t.id)}</span></h1>
      ${table([
        { title: "partition", key: "partition", num: true },
        { title: "log start", num: true, html: p => num(p.log_start) },
        { title: "high watermark", num: true, html: p => num(p.high_watermark) },
        { title: "last stable", num: true, narrow: true, html: p => num(p.last_stable) },
        { title: "size", num: true, html: p => bytes(p.size_bytes) },
        { title: "newest record", narrow: true, html: p => esc(time(p.max_timestamp)) },
      ], t.partitions, 'data-testid="partitions"')}
      <h2>Messages</h2>
      <form class="browse" data-topic="${esc(t.name)}">
        <label>partition <select name="p">${opts}</select></label>
        <label>from <select name="from">${fromOpts}</select></label>
        <label>offset or time <input name="at" value="${esc(at)}" placeholder="e.g. 42 or 2026-12-05T10:00:00" size="20"></label>
        <label>max <input name="max" type="number" min="1" max="500" value="${max}" style="width:5rem"></label>
        <button type="submit">Show</button>
      </form>
      ${msgError ? `<p class="error">${esc(msgError)}</p>` : ""}
      ${undecodable}
      ${table([
        { title: "offset", num: true, html: r => num(r.offset) },
        { title: "timestamp", narrow: true, html: r => `<span class="hdr">${esc(time(r.timestamp))}</span>` },
        { title: "key", html: r => payload(r.key) },
        { title: "value", html: r => payload(r.value) },
        { title: "headers", html: r => r.headers.map(h => `<div class="hdr"><b>${esc(h.key)}</b>: ${h.value ? esc(h.value.text ?? "base64:" + h.value.base64) : "null"}</div>`).join("") },
      ], records, 'data-testid="messages"')}
      ${msgs ? `<p class="muted">offsets ${num(msgs.start)} to ${num(msgs.next - 1)} of ${num(msgs.log_start)}–${num(msgs.high_watermark - 1)} (read uncommitted)</p>` : ""}
      <h2>Configs <span class="muted">${showAll ? "all" : "set on this topic"}</span>
        <a href="#/topics/${enc(name)}?${showAll ? "" : "configs=all"}" style="font-size:.85rem">${showAll ? "only overrides" : "show all"}</a></h2>
      ${table([
        { title: "name", html: c => `<code title="${esc(c.doc)}">${esc(c.name)}</code>` },
        { title: "value", html: c => `<code>${esc(c.value)}</code>` },
        { title: "source", html: c => c.default ? '<span class="muted">default</span>' : tag("topic", "warn") },
      ], configs, 'data-testid="configs"', "none: every config has its default")}`,
  };
}

async function groups() {
  const list = await api("/v1/groups");
  return {
    refresh: true,
    html: `<h1>Groups <span class="muted">${list.length}</span></h1>
      ${table([
        { title: "group", html: g => link("/groups/" + enc(g.id), g.id) },
        { title: "type", html: g => tag(g.type) },
        { title: "state", html: g => statusTag(g.state) },
        { title: "members", key: "members", num: true },
        { title: "lag", num: true, html: g => num(g.lag) },
      ], list, 'data-testid="groups"')}`,
  };
}

async function group(id) {
  const g = await api("/v1/groups/" + enc(id));
  const maxLag = Math.max(1, ...g.offsets.map(o => o.lag || 0));
  return {
    refresh: true,
    html: `<h1>${esc(g.id)} <span class="muted">${esc(g.type)} group</span> ${statusTag(g.state)}</h1>
      <div class="cards"><div class="card"><div class="n" data-testid="group-lag">${num(g.lag)}</div><div class="l">records behind</div></div>
        <div class="card"><div class="n">${g.members.length}</div><div class="l">members</div></div></div>
      <h2>Lag per partition</h2>
      ${table([
        { title: "topic", html: o => link("/topics/" + enc(o.topic), o.topic) },
        { title: "partition", key: "partition", num: true },
        { title: g.type === "share" ? "start" : "committed", num: true, html: o => num(o.committed) },
        { title: "end", num: true, html: o => num(o.end) },
        { title: "lag", num: true, html: o => num(o.lag) },
        { title: "", narrow: true, html: o => `<div class="bar"><span style="width:${(100 * (o.lag || 0) / maxLag).toFixed(1)}%"></span></div>` },
        { title: "member", narrow: true, html: o => esc(o.owner || "–") },
      ], g.offsets, 'data-testid="group-offsets"')}
      <h2>Members</h2>
      ${table([
        { title: "member", html: m => `<code>${esc(m.id)}</code>` },
        { title: "client", key: "client_id" },
        { title: "host", key: "host", narrow: true },
        { title: g.type === "share" ? "subscribed" : "assigned", html: m => esc(m.assigned.join(", ")) },
      ], g.members, 'data-testid="group-members"')}`,
  };
}

function lagOf(p) { return p.partitions.reduce((a, x) => a + Math.max(0, x.lag), 0); }

async function pipelines() {
  const [list, h] = await Promise.all([api("/v1/pipelines").catch(e => { if (e instanceof Unauthorized) throw e; return null; }), api("/v1/history")]);
  if (list === null) return { refresh: false, html: `<h1>Pipelines</h1><p class="muted">No plugin host runs in this broker.</p>` };
  const names = list.map(p => p.name);
  const cls = ["s1", "s2", "s3", "s4"];
  const series = names.slice(0, 8).map((n, i) => ({ name: n, cls: cls[i % 4], get: q => (q.pipelines[n] || [0])[0] }));
  return {
    refresh: true,
    html: `<h1>Pipelines <span class="muted">${list.length}</span></h1>
      ${table([
        { title: "pipeline", html: p => link("/pipelines/" + enc(p.name), p.name) },
        { title: "status", html: p => statusTag(p.status) },
        { title: "version", narrow: true, html: p => `<code>${esc((p.version || "–").slice(0, 12))}</code>` },
        { title: "in", num: true, html: p => num(p.records_in) },
        { title: "out", num: true, html: p => num(p.records_out) },
        { title: "dead letters", num: true, html: p => num(p.dead_lettered) },
        { title: "lag", num: true, html: p => num(lagOf(p)) },
        { title: "last error", narrow: true, html: p => p.last_error ? `<span class="error">${esc(p.last_error)}</span>${errorAge(p)}` : "" },
      ], list, 'data-testid="pipelines"')}
      <h2>Records in per second</h2>
      <div class="charts">${chart("Records in", h.points, series, perSec)}</div>`,
  };
}

// How long ago a pipeline's last error happened: an old one is not one that keeps coming.
function errorAge(p) {
  if (p.last_error_at_ms == null) return "";
  const s = Math.max(0, Math.floor((Date.now() - p.last_error_at_ms) / 1000));
  const text = s < 120 ? `${s} s` : s < 7200 ? `${Math.floor(s / 60)} min` : s < 172800 ? `${Math.floor(s / 3600)} h` : `${Math.floor(s / 86400)} d`;
  return ` <span class="muted">(${text} ago)</span>`;
}

async function pipeline(name) {
  const [list, h, dl] = await Promise.all([api("/v1/pipelines"), api("/v1/history"), api(`/v1/pipelines/${enc(name)}/dead-letters?max=50`)]);
  const p = list.find(x => x.name === name);
  if (!p) throw new Error(`no pipeline '${name}'`);
  const get = i => q => (q.pipelines[name] || [0, 0, 0])[i];
  const kv = [["inputs", p.inputs.map(t => link("/topics/" + enc(t), t)).join(", ")],
    ["output", p.output ? link("/topics/" + enc(p.output), p.output) : "–"],
    ["dead letters to", p.dead_letter ? link("/topics/" + enc(p.dead_letter), p.dead_letter) : "–"],
    ["version", `<code>${esc(p.version || "–")}</code>`],
    ["records in / out", `${num(p.records_in)} / ${num(p.records_out)}`],
    ["dead letters · retried · late", `${num(p.dead_lettered)} · ${num(p.retried)} · ${num(p.late)}`],
    ["traps · reloads", `${num(p.traps)} · ${num(p.reloads)}`],
    ["last error", p.last_error ? `<span class="error">${esc(p.last_error)}</span>${errorAge(p)}` : "none"]];
  return {
    refresh: true,
    html: `<h1>${esc(p.name)} ${statusTag(p.status)}</h1>
      <div class="table-wrap"><table data-testid="pipeline-facts">${kv.map(([k, v]) => `<tr><th>${esc(k)}</th><td>${v}</td></tr>`).join("")}</table></div>
      <div class="charts" style="margin-top:.75rem">
        ${chart("Records", h.points, [{ name: "in", cls: "s1", get: get(0) }, { name: "out", cls: "s2", get: get(1) }, { name: "dead", cls: "s3", get: get(2) }], perSec)}
      </div>
      <h2>Tasks <span class="muted">${p.partitions.length}</span></h2>
      ${table([
        { title: "input", html: x => esc(x.topic + "-" + x.partition) },
        { title: "next offset", num: true, html: x => num(x.next_offset) },
        { title: "end", num: true, html: x => num(x.high_watermark) },
        { title: "lag", num: true, html: x => num(x.lag) },
        { title: "event time", narrow: true, html: x => esc(time(x.event_time_watermark)) },
      ], p.partitions, 'data-testid="pipeline-tasks"')}
      <h2>Dead letters <span class="muted">newest ${dl.records.length}</span></h2>
      ${table([
        { title: "time", narrow: true, html: r => `<span class="hdr">${esc(time(r.timestamp))}</span>` },
        { title: "reason", html: r => `<span class="error">${esc(r.dead_letter.reason || "–")}</span>` },
        { title: "from", html: r => r.dead_letter.topic ? "<code>" + esc(`${r.dead_letter.topic}-${r.dead_letter.partition}@${r.dead_letter.offset}`) + "</code>" : "–" },
        { title: "key", html: r => payload(r.key) },
        { title: "value", html: r => payload(r.value) },
      ], dl.records, 'data-testid="dead-letters"')}`,
  };
}

// ---------------------------------------------------------------- routing
let timer = null;
let generation = 0;

function route() {
  const [path, qs] = (location.hash.slice(1) || "/").split("?");
  const params = new URLSearchParams(qs || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const section = parts[0] || "overview";
  document.querySelectorAll("header nav a").forEach(a => a.classList.toggle("active", a.dataset.nav === section));
  switch (section) {
    case "topics": return parts[1] ? () => topic(parts[1], params) : () => topics(params);
    case "groups": return parts[1] ? () => group(parts[1]) : groups;
    case "pipelines": return parts[1] ? () => pipeline(parts[1]) : pipelines;
    default: return overview;
  }
}

async function draw(first) {
  const mine = ++generation;
  const view = route();
  try {
    const { html, refresh } = await view();
    if (mine !== generation) return; // a newer navigation won
    // Keep the reader's place when a live view is redrawn.
    const y = window.scrollY;
    main.innerHTML = html;
    if (!first) window.scrollTo(0, y);
    live.textContent = refresh ? "live · " + new Date().toLocaleTimeString() : "";
    clearTimeout(timer);
    if (refresh) timer = setTimeout(() => draw(false), REFRESH_MS);
  } catch (e) {
    if (mine !== generation) return;
    clearTimeout(timer);
    if (e instanceof Unauthorized) {
      main.innerHTML = `<h1>Token needed</h1><p>This admin API needs its token (<code>--admin-token</code>).</p>
        <form id="token"><input name="token" type="password" placeholder="admin token" autocomplete="off"> <button>Use</button></form>`;
      return;
    }
    main.innerHTML = `<p class="error" data-testid="error">${esc(e.message)}</p>`;
  }
}

// Forms: the message browser and the token prompt; the topics filter.
main.addEventListener("submit", ev => {
  ev.preventDefault();
  const f = ev.target;
  if (f.id === "token") {
    sessionStorage.setItem("sluice-token", f.token.value);
    draw(true);
    return;
  }
  if (f.classList.contains("browse")) {
    const q = new URLSearchParams({ p: f.p.value, from: f.from.value, at: f.at.value, max: f.max.value });
    location.hash = `#/topics/${enc(f.dataset.topic)}?${q}`;
  }
});
main.addEventListener("input", ev => {
  if (ev.target.dataset.filter === "topics") {
    const v = ev.target.value;
    history.replaceState(null, "", "#/topics" + (v ? "?q=" + enc(v) : ""));
    draw(false).then(() => {
      const i = main.querySelector("[data-filter=topics]");
      if (i) { i.focus(); i.setSelectionRange(v.length, v.length); }
    });
  }
});
window.addEventListener("hashchange", () => draw(true));
draw(true);
