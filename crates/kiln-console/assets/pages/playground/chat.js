// Chat: a conversation with a Text Generation model, streamed token by token over the native
// route's server-sent events; JSON mode and tool definitions as options.

import { api, el, notice } from "../../app.js";
import { labelled, modelPicker, runPath } from "./common.js";

const TOOLS_EXAMPLE = JSON.stringify([{
  name: "get_weather",
  description: "Current weather in a city",
  parameters: {
    type: "object",
    properties: { city: { type: "string" } },
    required: ["city"],
  },
}], null, 2);

const SCHEMA_EXAMPLE = JSON.stringify({
  type: "object",
  properties: { answer: { type: "string" }, confidence: { type: "number" } },
  required: ["answer"],
}, null, 2);

// The conversation survives switching tabs (not reloading the page).
const conversation = [];

function parseJson(text, what) {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new Error(`${what} is not valid JSON: ${error.message}`);
  }
}

function bubble(role, text) {
  const body = el("div", { class: "text" }, text);
  const node = el("div", { class: `msg ${role}`, "data-test": role === "user" ? "chat-question" : "chat-answer" },
    el("span", { class: "who" }, role), body);
  return { node, body };
}

export function chatTab(root, models) {
  const model = modelPicker(models, "Text Generation", "chat-model",
    ["@cf/meta/llama-3.1-8b-instruct"]);
  const log = el("div", { class: "chat-log", "data-test": "chat-log" });
  const input = el("textarea", { rows: 3, "data-test": "chat-input", placeholder: "Ask something… (Enter sends, Shift+Enter for a new line)" });
  const system = el("input", { type: "text", class: "grow", "data-test": "chat-system", placeholder: "You are a helpful assistant." });
  const maxTokens = el("input", { type: "number", min: 1, max: 4096, value: "256", "data-test": "chat-max-tokens" });
  const temperature = el("input", { type: "number", min: 0, max: 5, step: 0.1, value: "0.6", "data-test": "chat-temperature" });
  const stream = el("input", { type: "checkbox", checked: true, "data-test": "chat-stream" });
  const jsonMode = el("input", { type: "checkbox", "data-test": "chat-json" });
  const schema = el("textarea", { class: "code", rows: 7, "data-test": "chat-schema" }, SCHEMA_EXAMPLE);
  const tools = el("textarea", { class: "code", rows: 7, "data-test": "chat-tools", placeholder: TOOLS_EXAMPLE });
  const send = el("button", { class: "primary", "data-test": "chat-send" }, "Send");
  const stop = el("button", { "data-test": "chat-stop", disabled: true }, "Stop");
  const clear = el("button", { "data-test": "chat-clear" }, "Clear");
  const usage = el("span", { class: "muted", "data-test": "chat-usage" });
  const errors = el("div");
  let controller = null;

  for (const message of conversation) log.append(bubble(message.role, message.content).node);

  function request(streaming) {
    const messages = [];
    if (system.value.trim()) messages.push({ role: "system", content: system.value.trim() });
    messages.push(...conversation);
    const body = { messages, stream: streaming };
    const max = Number(maxTokens.value);
    if (max > 0) body.max_tokens = max;
    if (temperature.value !== "") body.temperature = Number(temperature.value);
    if (jsonMode.checked) {
      body.response_format = { type: "json_schema", json_schema: parseJson(schema.value, "The JSON schema") };
    }
    if (tools.value.trim()) body.tools = parseJson(tools.value, "The tool definitions");
    return body;
  }

  function showCalls(target, calls) {
    if (!calls || !calls.length) return;
    target.append(el("div", { class: "muted", "data-test": "chat-tool-calls" }, "Tool calls:",
      el("pre", null, JSON.stringify(calls, null, 2))));
  }

  async function ask() {
    const text = input.value.trim();
    if (!text || controller) return;
    errors.replaceChildren();
    let body;
    conversation.push({ role: "user", content: text });
    try {
      // With tools the calls come from the whole answer; otherwise as asked.
      body = request(stream.checked && !tools.value.trim());
    } catch (error) {
      conversation.pop();
      notice(errors, error);
      return;
    }
    input.value = "";
    log.append(bubble("user", text).node);
    const answer = bubble("assistant", "");
    answer.node.dataset.state = "streaming";
    log.append(answer.node);
    log.scrollTop = log.scrollHeight;
    controller = new AbortController();
    send.disabled = true;
    stop.disabled = false;
    usage.textContent = "";
    let reply = "";
    try {
      if (body.stream) {
        await api.stream(runPath(model.value), body, (event) => {
          if (event.errors && event.errors.length) {
            const first = event.errors[0];
            throw Object.assign(new Error(first.message), { code: first.code });
          }
          if (typeof event.response === "string" && event.response) {
            reply += event.response;
            answer.body.textContent = reply;
            log.scrollTop = log.scrollHeight;
          }
          if (event.tool_calls) showCalls(answer.node, event.tool_calls);
          if (event.usage) usage.textContent = usageText(event.usage);
        }, { signal: controller.signal });
      } else {
        const response = await api.raw(runPath(model.value), { method: "POST", body, signal: controller.signal });
        const envelope = await response.json();
        if (!envelope.success) {
          const first = (envelope.errors && envelope.errors[0]) || {};
          throw Object.assign(new Error(first.message || "request failed"), { code: first.code, status: response.status });
        }
        const result = envelope.result;
        reply = typeof result.response === "string" ? result.response : JSON.stringify(result.response, null, 2);
        answer.body.textContent = reply;
        showCalls(answer.node, result.tool_calls);
        if (result.usage) usage.textContent = usageText(result.usage);
      }
      answer.node.dataset.state = "done";
    } catch (error) {
      if (error.name === "AbortError") {
        answer.node.dataset.state = "stopped";
        answer.node.append(el("div", { class: "muted" }, "(stopped)"));
      } else {
        answer.node.dataset.state = "error";
        notice(errors, error);
      }
    } finally {
      conversation.push({ role: "assistant", content: reply });
      controller = null;
      send.disabled = false;
      stop.disabled = true;
    }
  }

  send.addEventListener("click", ask);
  stop.addEventListener("click", () => controller && controller.abort());
  clear.addEventListener("click", () => {
    conversation.length = 0;
    log.replaceChildren();
    usage.textContent = "";
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      ask();
    }
  });

  root.append(
    el("div", { class: "panel stack" },
      el("div", { class: "row" }, labelled("Model", model)),
      log, errors, input,
      el("div", { class: "row" }, send, stop, clear, el("span", { class: "grow" }), usage),
      el("details", { class: "options" }, el("summary", null, "Options"),
        el("div", { class: "stack" },
          el("div", { class: "row" },
            labelled("System prompt", system),
            labelled("max_tokens", maxTokens),
            labelled("temperature", temperature),
            el("label", { class: "inline" }, stream, "stream")),
          el("div", { class: "row top" },
            el("div", { class: "grow stack" },
              el("label", { class: "inline" }, jsonMode, "JSON mode (response_format: json_schema)"), schema),
            el("div", { class: "grow stack" },
              el("span", { class: "muted" }, "Tools (JSON array; the answer's tool_calls are shown)"), tools))))),
  );
}

function usageText(usage) {
  const parts = [`${usage.prompt_tokens ?? "?"} prompt + ${usage.completion_tokens ?? "?"} completion tokens`];
  if (usage.neurons !== undefined) parts.push(`${Number(usage.neurons).toFixed(2)} neurons`);
  return parts.join(" · ");
}
