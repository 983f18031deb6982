// The console's shell: the API client every page uses, DOM helpers, and the hash router.
// Kiln serves these files itself; nothing here reaches any other origin.

import playground from "./pages/playground.js";
import models from "./pages/models.js";
import gateway from "./pages/gateway.js";
import vectorize from "./pages/vectorize.js";
import usage from "./pages/usage.js";
import apiPage from "./pages/api.js";

const TOKEN_KEY = "kiln.token";

/** An error envelope (or a failed request) as a thrown value. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

function token() {
  try {
    return localStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return "";
  }
}

function headers(extra) {
  const result = new Headers(extra || {});
  const bearer = token();
  if (bearer && !result.has("authorization")) result.set("authorization", `Bearer ${bearer}`);
  return result;
}

function isBinary(body) {
  return body instanceof Blob || body instanceof ArrayBuffer || ArrayBuffer.isView(body)
    || body instanceof FormData;
}

function requestInit(method, body) {
  const init = { method, headers: headers() };
  if (body === undefined) return init;
  if (isBinary(body)) {
    init.body = body;
  } else {
    init.headers.set("content-type", "application/json");
    init.body = JSON.stringify(body);
  }
  return init;
}

/** The error a non-success response carries: Workers AI's envelope, OpenAI's, or its text. */
async function errorOf(response) {
  const text = await response.text().catch(() => "");
  let body = null;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON
  }
  const first = body && ((Array.isArray(body.errors) && body.errors[0])
    || (Array.isArray(body.error) && body.error[0]) || (body.error && body.error.message && body.error));
  if (first) return new ApiError(response.status, first.code ?? null, first.message || String(first));
  return new ApiError(response.status, null, text.trim() || `${response.status} ${response.statusText}`);
}

async function envelope(response) {
  if (!response.ok) throw await errorOf(response);
  const type = response.headers.get("content-type") || "";
  if (!type.includes("json")) return response;
  const body = await response.json();
  if (body && typeof body === "object" && "success" in body) {
    if (body.success === false) {
      const first = (body.errors && body.errors[0]) || {};
      throw new ApiError(response.status, first.code ?? null, first.message || "request failed");
    }
    return body.result;
  }
  return body;
}

async function send(method, path, body) {
  let response;
  try {
    response = await fetch(path, requestInit(method, body));
  } catch (error) {
    throw new ApiError(0, null, `Kiln did not answer: ${error.message}`);
  }
  return envelope(response);
}

/** Splits a server-sent event stream into its `data:` payloads. */
async function readEvents(response, onData) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
    let end;
    while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
      const data = block.split(/\r?\n/).filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, "")).join("\n");
      if (data && onData(data) === false) {
        reader.cancel().catch(() => {});
        return;
      }
    }
    if (done) {
      if (buffer.trim().startsWith("data:")) onData(buffer.trim().slice(5).trim());
      return;
    }
  }
}

export const api = {
  account: "",
  auth: "open",
  scopes: [],
  accountPath(rest) {
    return `/client/v4/accounts/${api.account}${rest}`;
  },
  get: (path) => send("GET", path),
  post: (path, body) => send("POST", path, body),
  put: (path, body) => send("PUT", path, body),
  patch: (path, body) => send("PATCH", path, body),
  del: (path) => send("DELETE", path),
  /** The plain fetch Response (the token is added); `init.body` as in `post`. */
  raw(path, init = {}) {
    const { body, method, ...rest } = init;
    const base = requestInit(method || (body === undefined ? "GET" : "POST"), body);
    if (typeof body === "string") {
      base.body = body;
      base.headers.delete("content-type");
    }
    for (const [name, value] of new Headers(rest.headers || {})) base.headers.set(name, value);
    return fetch(path, { ...rest, method: base.method, headers: base.headers, body: base.body });
  },
  /**
   * POSTs `body` as JSON and calls `onEvent(json)` for each server-sent `data:` line until
   * `[DONE]` or the end. `options.signal` aborts it. A refused request throws `ApiError`.
   */
  async stream(path, body, onEvent, options = {}) {
    const init = requestInit("POST", body);
    init.signal = options.signal;
    const response = await fetch(path, init);
    if (!response.ok) throw await errorOf(response);
    const type = response.headers.get("content-type") || "";
    if (!type.includes("event-stream")) {
      onEvent(await envelope(response));
      return;
    }
    await readEvents(response, (data) => {
      if (data === "[DONE]") return false;
      let event;
      try {
        event = JSON.parse(data);
      } catch {
        return true;
      }
      onEvent(event);
      return true;
    });
  },
};

/** `el("div", {class: "x", "on:click": f, dataset: {a: 1}}, "text", child)`. */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "id") node.id = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.replace(/^on:?/, "").toLowerCase(), value);
    } else if (key === "value" && "value" in node) node.value = value;
    else if (key === "checked" || key === "disabled" || key === "selected") node[key] = Boolean(value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** columns: `[{key, label, render?(row)}]` → a `<table>`. */
export function table(columns, rows) {
  const head = el("tr", null, columns.map((c) => el("th", null, c.label)));
  const body = rows.map((row) => el("tr", null, columns.map((c) => {
    const value = c.render ? c.render(row) : row[c.key];
    return el("td", null, value === undefined || value === null ? "" : value);
  })));
  return el("table", { class: "data" }, el("thead", null, head),
    el("tbody", null, rows.length ? body : el("tr", null,
      el("td", { class: "muted", colspan: columns.length }, "none"))));
}

/** Shows `error` (an ApiError or any Error) in `container`, in place of an earlier notice. */
export function notice(container, error) {
  for (const old of container.querySelectorAll(":scope > .error")) old.remove();
  const code = error && error.code !== undefined && error.code !== null ? `${error.code}: ` : "";
  const status = error && error.status ? ` (HTTP ${error.status})` : "";
  const box = el("div", { class: "error", role: "alert", "data-test": "error" },
    el("strong", null, "Error "), `${code}${error && error.message ? error.message : error}${status}`);
  container.prepend(box);
  return box;
}

export function formatBytes(n) {
  if (n === null || n === undefined || Number.isNaN(Number(n))) return "–";
  let value = Number(n);
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(value < 10 ? 2 : 1)} ${units[unit]}`;
}

export function formatTime(isoOrMs) {
  if (isoOrMs === null || isoOrMs === undefined || isoOrMs === "") return "–";
  const date = new Date(typeof isoOrMs === "string" && /^\d+$/.test(isoOrMs) ? Number(isoOrMs) : isoOrMs);
  if (Number.isNaN(date.getTime())) return String(isoOrMs);
  return date.toLocaleString(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
}

const PAGES = [playground, models, gateway, vectorize, usage, apiPage];

function parseHash() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [id, query] = hash.split("?");
  const params = Object.fromEntries(new URLSearchParams(query || ""));
  return { id: id || "playground", params };
}

let generation = 0;

async function route() {
  const { id, params } = parseHash();
  const page = PAGES.find((p) => p.id === id);
  if (!page) {
    location.hash = "#/playground";
    return;
  }
  const mine = ++generation;
  const root = document.getElementById("page");
  root.replaceChildren();
  delete root.dataset.page;
  document.title = `${page.title} · Kiln`;
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", link.dataset.route === id);
  }
  try {
    await page.render(root, params);
  } catch (error) {
    if (mine === generation) notice(root, error);
  }
  if (mine === generation) root.dataset.page = id;
}

async function whoami() {
  const status = document.getElementById("status");
  status.replaceChildren();
  try {
    const me = await api.get("/kiln/whoami");
    api.account = me.account_id;
    api.auth = me.auth;
    api.scopes = me.scopes || [];
    document.getElementById("account").textContent = me.account_id;
    document.getElementById("auth-mode").textContent = me.auth === "open"
      ? "open mode" : `token · ${api.scopes.length} scopes`;
  } catch (error) {
    document.getElementById("account").textContent = "?";
    document.getElementById("auth-mode").textContent = "";
    notice(status, error.status === 401 || error.status === 403
      ? new ApiError(error.status, error.code, `${error.message} — paste an API token above`)
      : error);
  }
}

async function start() {
  const input = document.getElementById("token");
  input.value = token();
  input.addEventListener("change", async () => {
    try {
      if (input.value.trim()) localStorage.setItem(TOKEN_KEY, input.value.trim());
      else localStorage.removeItem(TOKEN_KEY);
    } catch {
      // storage unavailable: the token lasts for this page only
    }
    await whoami();
    await route();
  });
  await whoami();
  window.addEventListener("hashchange", route);
  if (!location.hash) history.replaceState(null, "", "#/playground");
  await route();
}

start();
