// Renders /api/v1/openapi.json: operations grouped by tag, each with its
// parameters, request body, responses (schemas expanded) and error codes.
// Plain DOM code, no dependencies, nothing inline (the page's CSP forbids it).
"use strict";

const METHODS = ["get", "put", "post", "delete", "options", "head", "patch"];

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

function resolve(doc, value) {
  let seen = 0;
  while (value && value.$ref && seen++ < 20) {
    const parts = value.$ref.replace(/^#\//, "").split("/");
    value = parts.reduce((node, key) => (node ? node[key] : undefined), doc);
  }
  return value || {};
}

// A schema as indented pseudo-JSON text: `name: type` per property, `?` when optional.
function schemaText(doc, schema, depth, seen) {
  const pad = "  ".repeat(depth);
  const name = schema && schema.$ref ? schema.$ref.split("/").pop() : null;
  if (name && seen.has(name)) return name;
  const next = name ? new Set([...seen, name]) : seen;
  const s = resolve(doc, schema);
  if (s.oneOf) return s.oneOf.map((o) => schemaText(doc, o, depth, next)).join(" | ");
  const types = [].concat(s.type || (s.properties ? "object" : "any"));
  const nullable = types.includes("null") ? " | null" : "";
  const type = types.filter((t) => t !== "null")[0] || "null";
  if (s.enum) return s.enum.map((v) => JSON.stringify(v)).join(" | ") + nullable;
  if (s.const !== undefined) return JSON.stringify(s.const);
  if (type === "array") return "[" + schemaText(doc, s.items || {}, depth, next) + "]" + nullable;
  if (type === "object" && s.properties) {
    const required = new Set(s.required || []);
    const lines = Object.entries(s.properties).map(([key, value]) => {
      const note = resolve(doc, value).description;
      return pad + "  " + key + (required.has(key) ? "" : "?") + ": " +
        schemaText(doc, value, depth + 1, next) + (note ? "  // " + note : "");
    });
    return (name ? name + " " : "") + "{\n" + lines.join("\n") + "\n" + pad + "}" + nullable;
  }
  if (type === "object" && s.additionalProperties) {
    return "{ [key]: " + schemaText(doc, s.additionalProperties, depth, next) + " }" + nullable;
  }
  return (s.format ? type + " (" + s.format + ")" : type) + nullable;
}

function contentBlock(doc, content) {
  return Object.entries(content || {}).map(([type, media]) =>
    el("div", {}, el("code", {}, type),
      media.schema ? el("pre", { class: "schema" }, schemaText(doc, media.schema, 0, new Set())) : null));
}

function operation(doc, path, method, op) {
  const statuses = doc.components.schemas.ErrorCode["x-http-status"] || {};
  const access = op["x-access"];
  const body = el("div", { class: "body" });
  if (op.description) body.append(el("p", {}, op.description));
  const params = (op.parameters || []).map((p) => resolve(doc, p));
  if (params.length) {
    body.append(el("h4", {}, "Parameters"), el("table", {},
      el("tr", {}, el("th", {}, "name"), el("th", {}, "in"), el("th", {}, "type"), el("th", {}, "")),
      params.map((p) => el("tr", {}, el("td", {}, el("code", {}, p.name + (p.required ? "" : "?"))),
        el("td", {}, p.in), el("td", {}, el("code", {}, schemaText(doc, p.schema || {}, 0, new Set()))),
        el("td", {}, p.description || "")))));
  }
  if (op.requestBody) {
    const request = resolve(doc, op.requestBody);
    body.append(el("h4", {}, "Request body" + (request.required ? "" : " (optional)")),
      contentBlock(doc, request.content));
  }
  body.append(el("h4", {}, "Responses"));
  for (const [status, raw] of Object.entries(op.responses || {})) {
    const response = resolve(doc, raw);
    body.append(el("div", {}, el("strong", {}, status), " ", response.description || ""),
      contentBlock(doc, status.startsWith("2") || status === "101" ? response.content : null));
  }
  const codes = op["x-error-codes"] || [];
  if (codes.length) {
    body.append(el("h4", {}, "Error codes"), el("p", { class: "codes" },
      codes.map((code) => el("code", { title: "HTTP " + (statuses[code] || "?") }, code + " " + (statuses[code] || "")))));
  }
  const summary = el("summary", {},
    el("span", { class: "method " + method }, method),
    el("span", { class: "path" }, path),
    el("span", { class: "summary" }, op.summary || ""),
    access ? el("span", { class: "badge " + access }, access === "token" ? "token required" : "public") : null);
  const node = el("details", { class: "op" }, summary, body);
  node.dataset.search = [method, path, op.summary || "", (op.tags || []).join(" "), codes.join(" ")].join(" ").toLowerCase();
  return node;
}

function render(doc) {
  document.getElementById("title").textContent = doc.info.title + " " + doc.info.version;
  document.getElementById("description").textContent = doc.info.description || "";
  const groups = new Map((doc.tags || []).map((t) => [t.name, []]));
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const method of METHODS) {
      if (!item[method]) continue;
      const tag = (item[method].tags || ["other"])[0];
      if (!groups.has(tag)) groups.set(tag, []);
      groups.get(tag).push(operation(doc, path, method, item[method]));
    }
  }
  const main = document.getElementById("operations");
  const toc = document.getElementById("toc");
  main.replaceChildren();
  for (const [tag, ops] of groups) {
    if (!ops.length) continue;
    const about = (doc.tags || []).find((t) => t.name === tag);
    main.append(el("section", { id: "tag-" + tag }, el("h2", {}, tag),
      about ? el("p", {}, about.description) : null, ops));
    toc.append(el("a", { href: "#tag-" + tag }, tag + " (" + ops.length + ")"));
  }
  const statuses = doc.components.schemas.ErrorCode["x-http-status"] || {};
  document.getElementById("errors").append(el("h2", {}, "Error codes"),
    el("p", {}, "Every error answer is ", el("code", {}, '{"error": {"code", "message"}}'), "."),
    el("table", {}, el("tr", {}, el("th", {}, "code"), el("th", {}, "HTTP status")),
      Object.entries(statuses).map(([code, status]) =>
        el("tr", {}, el("td", {}, el("code", {}, code)), el("td", {}, String(status))))));
  document.getElementById("filter").addEventListener("input", (event) => {
    const words = event.target.value.toLowerCase().split(/\s+/).filter(Boolean);
    for (const node of main.querySelectorAll("details.op")) {
      node.classList.toggle("hidden", !words.every((w) => node.dataset.search.includes(w)));
    }
  });
}

fetch("/api/v1/openapi.json")
  .then((response) => {
    if (!response.ok) throw new Error("HTTP " + response.status);
    return response.json();
  })
  .then(render)
  .catch((err) => {
    document.getElementById("operations").replaceChildren(
      el("p", { class: "error" }, "Cannot load the API description: " + err.message));
  });
