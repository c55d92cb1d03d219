// The lmatlas playground: plain JavaScript over the server's own routes. The API key is typed
// once and kept in this browser (localStorage), as is the conversation.
"use strict";

const $ = (id) => document.getElementById(id);
const store = window.localStorage;

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

async function call(path, body) {
  const response = await fetch(path, body === undefined ? { headers: headers() }
    : { method: "POST", headers: headers(), body: JSON.stringify(body) });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error((data.error && data.error.message) || response.statusText);
  return data;
}

function element(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

// ---- tabs, key, health -----------------------------------------------------------------
document.querySelectorAll("nav button").forEach((b) => b.addEventListener("click", () => {
  document.querySelectorAll("nav button, .tab").forEach((e) => e.classList.remove("active"));
  b.classList.add("active");
  $(b.dataset.tab).classList.add("active");
  if (b.dataset.tab === "catalog") loadCatalog();
  if (b.dataset.tab === "tasks") loadTasks();
}));

$("api-key").value = store.getItem("lmatlas-key") || "";
$("api-key").addEventListener("change", () => { store.setItem("lmatlas-key", $("api-key").value.trim()); loadTasks(true); });

async function health() {
  try {
    const r = await fetch("/health");
    const h = await r.json();
    $("status").textContent = h.status === "ok" ? "ready" : h.status;
    $("status").className = "status " + (h.status === "ok" ? "ok" : "bad");
    if (h.status === "loading") setTimeout(health, 1000);
  } catch (e) {
    $("status").textContent = "offline";
    $("status").className = "status bad";
  }
}
health();

// ---- chat ------------------------------------------------------------------------------
let conversation = JSON.parse(store.getItem("lmatlas-chat") || "[]");
let running = null; // the AbortController of the reply being streamed

function showConversation() {
  $("messages").replaceChildren(...conversation.map((m) => element("div", "message " + m.role, m.content)));
  $("messages").scrollTop = $("messages").scrollHeight;
}
showConversation();
$("system").value = store.getItem("lmatlas-system") || "";
$("system").addEventListener("change", () => store.setItem("lmatlas-system", $("system").value));

$("clear").addEventListener("click", () => {
  conversation = [];
  store.setItem("lmatlas-chat", "[]");
  showConversation();
});

$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("chat-form").requestSubmit(); }
});

$("chat-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = $("prompt").value.trim();
  if (!text || running) return;
  $("prompt").value = "";
  conversation.push({ role: "user", content: text });
  showConversation();
  const system = $("system").value.trim();
  const body = {
    messages: (system ? [{ role: "system", content: system }] : []).concat(conversation),
    temperature: Number($("temperature").value), top_p: Number($("top-p").value),
    max_tokens: Number($("max-tokens").value), stream: true,
  };
  const reply = element("div", "message assistant", "");
  $("messages").appendChild(reply);
  running = new AbortController();
  $("send").disabled = true;
  $("stop").disabled = false;
  let content = "";
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(), body: JSON.stringify(body), signal: running.signal,
    });
    if (!response.ok) {
      const data = await response.json().catch(() => ({}));
      throw new Error((data.error && data.error.message) || response.statusText);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffered = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += decoder.decode(value, { stream: true });
      const events = buffered.split("\n\n");
      buffered = events.pop();
      for (const event of events) {
        const data = event.replace(/^data: /, "");
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        for (const choice of chunk.choices || []) {
          if (choice.delta && choice.delta.content) {
            content += choice.delta.content;
            reply.textContent = content;
            $("messages").scrollTop = $("messages").scrollHeight;
          }
        }
      }
    }
  } catch (err) {
    if (err.name !== "AbortError") {
      reply.className = "message error";
      reply.textContent = err.message;
    }
  } finally {
    if (content) conversation.push({ role: "assistant", content: content });
    store.setItem("lmatlas-chat", JSON.stringify(conversation));
    running = null;
    $("send").disabled = false;
    $("stop").disabled = true;
  }
});

// Stop: the request is aborted; the server sees its client gone and drops it from the batch.
$("stop").addEventListener("click", () => { if (running) running.abort(); });

// ---- search ----------------------------------------------------------------------------
$("search-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const list = $("hits");
  list.replaceChildren();
  try {
    const data = await call("/search", { query: $("query").value, k: Number($("k").value) });
    for (const hit of data.hits) {
      const li = element("li");
      li.appendChild(element("div", "source", `${hit.score.toFixed(3)} · ${hit.source}:${hit.line}`));
      li.appendChild(element("div", "", hit.text));
      list.appendChild(li);
    }
    if (!data.hits.length) list.appendChild(element("li", "", "no hits"));
  } catch (err) {
    list.appendChild(element("li", "message error", err.message));
  }
});

// ---- tasks -----------------------------------------------------------------------------
let tasksLoaded = false;
async function loadTasks(again) {
  if (tasksLoaded && !again) return;
  try {
    const data = await call("/models/tasks");
    $("task").replaceChildren(...Object.entries(data.tasks).map(([task, model]) => {
      const o = element("option", "", `${task} (${model})`);
      o.value = task;
      return o;
    }));
    tasksLoaded = true;
  } catch (err) {
    $("task-result").replaceChildren(element("div", "message error", err.message));
  }
}

$("task-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const out = $("task-result");
  let inputs = $("task-inputs").value;
  try { if (/^\s*[[{]/.test(inputs)) inputs = JSON.parse(inputs); } catch (_) { /* plain text */ }
  try {
    const parameters = JSON.parse($("task-parameters").value || "{}");
    const data = await call("/models/" + $("task").value, { inputs: inputs, parameters: parameters });
    const rows = Array.isArray(data) && data.length && data[0].token_str !== undefined ? data : null;
    if (rows) {  // fill-mask: a table of the candidates
      const table = element("table");
      table.appendChild(element("tr")).append(element("th", "", "token"), element("th", "", "score"), element("th", "", "sequence"));
      for (const r of rows) {
        table.appendChild(element("tr")).append(element("td", "", r.token_str), element("td", "", r.score.toFixed(4)),
          element("td", "", r.sequence));
      }
      out.replaceChildren(table);
    } else {
      out.replaceChildren(element("pre", "", JSON.stringify(data, null, 2)));
    }
  } catch (err) {
    out.replaceChildren(element("div", "message error", err.message));
  }
});

// ---- catalogue -------------------------------------------------------------------------
let catalog = null;
const COLUMNS = [["name", "Model"], ["year", "Year"], ["organisation", "Organisation"], ["architecture", "Architecture"],
                 ["params", "Parameters"], ["weights", "Weights"]];
let sortKey = "year", sortUp = true;

function count(n) {
  if (n === null || n === undefined) return "";
  for (const [size, unit] of [[1e12, "T"], [1e9, "B"], [1e6, "M"]]) if (n >= size) return (n / size).toPrecision(3) + unit;
  return String(n);
}

function showTable() {
  const head = $("catalog-table").tHead;
  head.replaceChildren(element("tr"));
  for (const [key, label] of COLUMNS) {
    const th = element("th", key === sortKey ? "sorted" + (sortUp ? " up" : "") : "", label);
    th.addEventListener("click", () => { sortUp = key === sortKey ? !sortUp : true; sortKey = key; showTable(); });
    head.rows[0].appendChild(th);
  }
  const rows = catalog.slice().sort((a, b) => {
    const x = a[sortKey], y = b[sortKey];
    if (x === y) return 0;
    if (x === null || x === undefined) return 1;
    if (y === null || y === undefined) return -1;
    return (x < y ? -1 : 1) * (sortUp ? 1 : -1);
  });
  $("catalog-table").tBodies[0].replaceChildren(...rows.map((m) => {
    const tr = element("tr");
    for (const [key] of COLUMNS) tr.appendChild(element("td", "", key === "params" ? count(m.params) : m[key]));
    return tr;
  }));
}

function showChart() {
  // Parameters (log scale) against year, one dot per model with a known size.
  const points = catalog.filter((m) => m.params);
  const W = 860, H = 380, L = 60, B = 40, T = 15, R = 20;
  const years = points.map((m) => m.year), logs = points.map((m) => Math.log10(m.params));
  const y0 = Math.min(...years) - 0.5, y1 = Math.max(...years) + 0.5;
  const p0 = Math.floor(Math.min(...logs)), p1 = Math.ceil(Math.max(...logs));
  const x = (year) => L + (year - y0) / (y1 - y0) * (W - L - R);
  const y = (lg) => H - B - (lg - p0) / (p1 - p0) * (H - B - T);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", W);
  svg.setAttribute("height", H);
  const add = (tag, attrs, text) => {
    const e = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    svg.appendChild(e);
    return e;
  };
  add("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#888" });
  add("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#888" });
  for (let p = p0; p <= p1; p++) {
    add("line", { x1: L, y1: y(p), x2: W - R, y2: y(p), stroke: "#eee" });
    add("text", { x: L - 8, y: y(p) + 4, "text-anchor": "end" }, count(10 ** p));
  }
  for (let yr = Math.ceil(y0); yr <= Math.floor(y1); yr++) add("text", { x: x(yr), y: H - B + 18, "text-anchor": "middle" }, yr);
  add("text", { x: 14, y: T + (H - B - T) / 2, transform: `rotate(-90 14 ${T + (H - B - T) / 2})`, "text-anchor": "middle" }, "parameters");
  for (const m of points) {
    const c = add("circle", { cx: x(m.year), cy: y(Math.log10(m.params)), r: 5 });
    c.appendChild(document.createElementNS(ns, "title")).textContent = `${m.name} (${m.year}): ${count(m.params)}`;
    add("text", { x: x(m.year) + 7, y: y(Math.log10(m.params)) + 4 }, m.name);
  }
  $("chart").replaceChildren(svg);
}

async function loadCatalog() {
  if (catalog) return;
  try {
    catalog = (await call("/catalog")).models;
    showChart();
    showTable();
  } catch (err) {
    $("chart").replaceChildren(element("div", "message error", err.message));
  }
}
