// Status page: polls the appliance's own JSON endpoints (no third-party code, works offline).
"use strict";

const REFRESH_MS = 2000;
const TOKEN_KEY = "stt-observability-token";

const $ = (id) => document.getElementById(id);

function headers() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function getJson(path) {
  const resp = await fetch(path, { headers: headers(), cache: "no-store" });
  if (resp.status === 401) {
    const err = new Error("unauthorised");
    err.unauthorised = true;
    throw err;
  }
  const body = await resp.json();
  if (!resp.ok && !body.status) throw new Error(`${path}: ${body.code || resp.status} ${body.message || ""}`);
  return body;
}

function fmtSec(value) {
  return value === null || value === undefined ? "–" : `${value.toFixed(2)} s`;
}

function fmtMiB(bytes) {
  return bytes ? `${(bytes / 2 ** 20).toFixed(0)} MiB` : "–";
}

function setRows(tbody, rows) {
  tbody.replaceChildren(...rows.map((cells) => {
    const tr = document.createElement("tr");
    for (const cell of cells) {
      const td = document.createElement("td");
      td.textContent = String(cell);
      tr.appendChild(td);
    }
    return tr;
  }));
}

function svgEl(name, attrs) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", name);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, value);
  return el;
}

function drawLatencyChart(points) {
  const svg = $("latency-chart");
  const width = 600, height = 180, left = 40, bottom = 20, top = 10;
  const children = [
    svgEl("line", { class: "axis", x1: left, y1: height - bottom, x2: width, y2: height - bottom }),
    svgEl("line", { class: "axis", x1: left, y1: top, x2: left, y2: height - bottom }),
  ];
  const maxLatency = Math.max(1, ...points.map((p) => p.latency_sec));
  const yOf = (v) => height - bottom - (v / maxLatency) * (height - bottom - top);
  for (const tick of [0, maxLatency / 2, maxLatency]) {
    const label = svgEl("text", { x: 2, y: yOf(tick) + 3 });
    label.textContent = `${tick.toFixed(1)} s`;
    children.push(label);
  }
  if (points.length > 0) {
    const step = (width - left - 10) / Math.max(1, points.length - 1);
    const coords = points.map((p, i) => [left + i * step, yOf(p.latency_sec)]);
    children.push(svgEl("polyline", { class: "line", points: coords.map((c) => c.join(",")).join(" ") }));
    for (const [x, y] of coords) children.push(svgEl("circle", { class: "point", cx: x, cy: y, r: 2 }));
  } else {
    const empty = svgEl("text", { x: width / 2 - 40, y: height / 2 });
    empty.textContent = "no finals yet";
    children.push(empty);
  }
  svg.replaceChildren(...children);
  svg.dataset.points = String(points.length);
}

function render(health, metrics, system) {
  const badge = $("health");
  badge.textContent = health.status;
  badge.dataset.status = health.status;
  $("reasons").replaceChildren(...(health.reasons || []).map((r) => {
    const li = document.createElement("li");
    li.textContent = r;
    return li;
  }));
  const s = metrics.sessions;
  $("sessions").textContent = `${s.active} active, ${s.streaming} streaming (max ${s.max})`;
  $("queue").textContent = `${metrics.decode.queue_depth} queued, ${metrics.decode.in_flight}/${metrics.decode.slots} running`;
  const recent = metrics.recent;
  $("latency").textContent = `${fmtSec(recent.final_latency_p50_sec)} / ${fmtSec(recent.final_latency_p95_sec)} (${recent.count} finals)`;
  $("rtf").textContent = recent.rtf_p50 === null ? "–" : recent.rtf_p50.toFixed(3);
  $("memory").textContent = `${fmtMiB(metrics.memory.rss_bytes)} / ${fmtMiB(metrics.memory.budget_bytes)}`;
  $("uptime").textContent = `${Math.round(metrics.uptime_sec)} s`;
  drawLatencyChart(recent.points);
  setRows($("streams").tBodies[0], metrics.streams.map((st) =>
    [st.stream, st.protocol, st.model_id, st.audio_sec.toFixed(1), st.utterances, st.pending_decodes, Math.round(st.age_sec)]));
  setRows($("models").tBodies[0], metrics.models.map((m) =>
    [m.model_id + (m.default ? " (default)" : ""), m.backend, m.device, m.compute_type, m.pool_size, m.active_sessions, m.state]));
  const hw = system.hardware || {};
  const facts = {
    profile: `${system.profile.chosen} (configured: ${system.profile.configured})`,
    machine: `${system.platform.system} ${system.platform.machine}, ${system.platform.cpu_count} CPUs`,
    memory: fmtMiB(system.memory.total_bytes),
    reason: (hw.reasons || []).join("; "),
    version: system.appliance.version,
  };
  $("hardware").replaceChildren(...Object.entries(facts).flatMap(([key, value]) => {
    const dt = document.createElement("dt");
    dt.textContent = key;
    const dd = document.createElement("dd");
    dd.textContent = value || "–";
    return [dt, dd];
  }));
  $("warnings").replaceChildren(...system.profile.warnings.map((w) => {
    const li = document.createElement("li");
    li.textContent = w;
    return li;
  }));
  $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

async function refresh() {
  try {
    const [health, metrics, system] = await Promise.all([getJson("/health"), getJson("/metrics.json"), getJson("/system")]);
    $("token-form").hidden = true;
    $("error").hidden = true;
    render(health, metrics, system);
  } catch (err) {
    if (err.unauthorised) {
      $("token-form").hidden = false;
    } else {
      $("error").textContent = `cannot reach the appliance: ${err.message}`;
      $("error").hidden = false;
      $("health").dataset.status = "down";
      $("health").textContent = "unreachable";
    }
  }
}

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value);
  refresh();
});

refresh();
setInterval(refresh, REFRESH_MS);
