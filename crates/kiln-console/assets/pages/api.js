// API: Kiln's OpenAPI document (GET /openapi.json), readable: operations by tag, each with its
// parameters, request body and responses.

import { api, el, notice, table } from "../app.js";

const METHODS = ["get", "post", "put", "patch", "delete", "head", "options"];

/** Resolves local `$ref`s (`#/components/…`) up to `depth` levels, never looping. */
function resolve(doc, schema, depth = 4, seen = new Set()) {
  if (!schema || typeof schema !== "object") return schema;
  if (Array.isArray(schema)) return schema.map((item) => resolve(doc, item, depth, seen));
  if (typeof schema.$ref === "string") {
    const ref = schema.$ref;
    if (depth <= 0 || seen.has(ref) || !ref.startsWith("#/")) return { $ref: ref };
    const target = ref.slice(2).split("/").reduce((node, key) => node && node[key.replace(/~1/g, "/").replace(/~0/g, "~")], doc);
    if (!target) return { $ref: ref };
    return resolve(doc, target, depth - 1, new Set([...seen, ref]));
  }
  const out = {};
  for (const [key, value] of Object.entries(schema)) out[key] = resolve(doc, value, depth, seen);
  return out;
}

function schemaBlock(doc, schema) {
  if (!schema) return el("span", { class: "muted" }, "no schema");
  return el("pre", { class: "schema" }, JSON.stringify(resolve(doc, schema), null, 2));
}

function typeOf(schema) {
  if (!schema) return "";
  if (schema.$ref) return schema.$ref.split("/").pop();
  if (schema.type === "array") return `${typeOf(schema.items)}[]`;
  if (schema.enum) return schema.enum.map((v) => JSON.stringify(v)).join(" | ");
  return schema.type || (schema.oneOf || schema.anyOf ? "one of…" : "");
}

function content(doc, body) {
  const entries = Object.entries((body && body.content) || {});
  if (!entries.length) return null;
  return entries.map(([type, media]) => el("div", null,
    el("div", { class: "muted" }, el("code", null, type)), schemaBlock(doc, media.schema)));
}

function operation(doc, path, method, op, shared) {
  const parameters = [...(shared || []), ...(op.parameters || [])].map((p) => resolve(doc, p, 1));
  const responses = Object.entries(op.responses || {});
  const requestBody = op.requestBody && resolve(doc, op.requestBody, 1);
  const known = METHODS.includes(method) ? method : "other";
  return el("details", { class: "op", "data-test": "operation", dataset: { path, method } },
    el("summary", null,
      el("span", { class: `method ${known}` }, method.toUpperCase()),
      el("code", null, path),
      el("span", { class: "muted" }, op.summary || op.operationId || "")),
    el("div", { class: "body" },
      op.description ? el("p", null, op.description) : null,
      parameters.length ? [el("h3", null, "Parameters"), table([
        { key: "name", label: "Name", render: (p) => el("code", null, p.name) },
        { key: "in", label: "In" },
        { key: "required", label: "Required", render: (p) => (p.required ? "yes" : "") },
        { key: "schema", label: "Type", render: (p) => typeOf(p.schema) },
        { key: "description", label: "Description" },
      ], parameters)] : null,
      requestBody ? [el("h3", null, `Request body${requestBody.required ? " (required)" : ""}`),
        requestBody.description ? el("p", null, requestBody.description) : null,
        content(doc, requestBody)] : null,
      responses.length ? [el("h3", null, "Responses"), responses.map(([status, response]) => {
        const resolved = resolve(doc, response, 1);
        const body = content(doc, resolved);
        const title = [el("strong", null, status), " ", resolved.description || ""];
        if (!body) return el("div", { class: "response" }, title);
        // Success bodies open, error envelopes folded.
        return el("details", { class: "response", open: /^2/.test(status) }, el("summary", null, title), body);
      })] : null));
}

/** The document's description: its first line, the rest (tables of codes) folded. */
function about(description) {
  if (!description) return null;
  const [first, ...rest] = description.trim().split("\n");
  return el("div", { class: "muted" }, el("p", null, first),
    rest.length ? el("details", null, el("summary", null, "More"), el("div", { class: "prose" }, rest.join("\n").trim())) : null);
}

export default {
  id: "api",
  title: "API",
  async render(root) {
    root.append(el("h1", null, "API reference"));
    let doc;
    try {
      doc = await api.get("/openapi.json");
    } catch (error) {
      notice(root, error.status === 404
        ? Object.assign(new Error("This server publishes no OpenAPI document (GET /openapi.json answered 404)."), { status: 404 })
        : error);
      return;
    }
    const info = doc.info || {};
    const groups = new Map();
    let count = 0;
    for (const [path, item] of Object.entries(doc.paths || {})) {
      for (const method of Object.keys(item)) {
        if (!METHODS.includes(method)) continue;
        const op = item[method];
        const tag = (op.tags && op.tags[0]) || "other";
        if (!groups.has(tag)) groups.set(tag, []);
        groups.get(tag).push(operation(doc, path, method, op, item.parameters));
        count += 1;
      }
    }
    const tagInfo = new Map((doc.tags || []).map((t) => [t.name, t.description]));
    const order = [...(doc.tags || []).map((t) => t.name), ...groups.keys()];
    const sections = [...new Set(order)].filter((tag) => groups.has(tag)).map((tag) =>
      el("section", { "data-test": "api-tag", dataset: { tag } },
        el("h2", null, tag), tagInfo.get(tag) ? el("p", { class: "muted" }, tagInfo.get(tag)) : null,
        groups.get(tag)));
    const filter = el("input", { type: "search", class: "grow", placeholder: "Filter by path or summary…", "data-test": "api-filter" });
    filter.addEventListener("input", () => {
      const needle = filter.value.trim().toLowerCase();
      for (const op of root.querySelectorAll("details.op")) {
        op.hidden = Boolean(needle) && !op.querySelector("summary").textContent.toLowerCase().includes(needle);
      }
      for (const section of root.querySelectorAll("section[data-test=api-tag]")) {
        section.hidden = !section.querySelector("details.op:not([hidden])");
      }
    });
    root.append(el("div", null,
      el("p", null, el("strong", null, info.title || "Kiln"), info.version ? ` ${info.version}` : "",
        el("span", { class: "muted" }, ` · OpenAPI ${doc.openapi || "?"} · ${count} operations · `),
        el("a", { href: "/openapi.json", target: "_blank" }, "openapi.json")),
      about(info.description),
      el("div", { class: "row" }, filter),
      sections));
  },
};
