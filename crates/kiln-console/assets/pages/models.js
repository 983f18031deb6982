// Models: what is installed and loaded (as `kiln ps` shows it), unloading, and pulling models
// from the store with a progress bar.

import { api, el, formatBytes, notice, table } from "../app.js";

function memoryPanel(info) {
  const used = info.memory_used_bytes || 0;
  const budget = info.memory_budget_bytes;
  const fill = el("div");
  fill.style.width = budget ? `${Math.min(100, (used / budget) * 100).toFixed(1)}%` : "0%";
  return el("div", { class: "panel stack", "data-test": "memory" },
    el("div", { class: "row" },
      el("strong", null, "Memory"),
      el("span", null, `${formatBytes(used)} used of ${budget ? formatBytes(budget) : "no"} budget`),
      el("span", { class: "muted" }, info.keep_alive_secs === null || info.keep_alive_secs === undefined
        ? "models stay loaded" : `idle models unload after ${info.keep_alive_secs} s`)),
    el("div", { class: "meter" }, fill));
}

export default {
  id: "models",
  title: "Models",
  async render(root) {
    const info = await api.get("/kiln/models");
    const errors = el("div");
    const pulls = el("div", { "data-test": "pulls" });

    async function refresh() {
      const fresh = await api.get("/kiln/models");
      if (!location.hash.startsWith("#/models")) return; // the user moved on
      root.replaceChildren();
      await render(fresh);
    }

    async function unload(name, button) {
      button.disabled = true;
      try {
        await api.post(`/kiln/models/${encodeURIComponent(name)}/unload`);
        await refresh();
      } catch (error) {
        button.disabled = false;
        notice(errors, error);
      }
    }

    async function pull(model, button) {
      button.disabled = true;
      const bar = el("progress", { "data-test": `pull-progress-${model.name}` });
      const text = el("span", { class: "muted" }, "starting…");
      const row = el("div", { class: "panel stack", "data-test": `pull-${model.name}` },
        el("div", { class: "row" }, el("strong", null, `Pulling ${model.name}`), text), bar);
      row.dataset.state = "pulling";
      pulls.append(row);
      let outcome = null;
      try {
        await api.stream("/kiln/models/pull", { name: model.name }, (event) => {
          if (event.status === "pulling") {
            if (event.total) {
              bar.max = event.total;
              bar.value = event.completed || 0;
              text.textContent = `${formatBytes(event.completed || 0)} of ${formatBytes(event.total)}`;
            }
          } else {
            outcome = event;
          }
        });
        if (!outcome) throw new Error("the pull ended without a result");
        if (outcome.status === "error") {
          const first = (outcome.errors && outcome.errors[0]) || {};
          throw Object.assign(new Error(first.message || "pull failed"), { code: first.code });
        }
        row.dataset.state = "success";
        bar.max = 1;
        bar.value = 1;
        text.textContent = "installed";
        await refresh();
      } catch (error) {
        row.dataset.state = "error";
        text.textContent = "failed";
        notice(row, error);
        button.disabled = false;
      }
    }

    async function render(data) {
      const installed = table([
        { key: "name", label: "Model", render: (m) => el("code", null, m.name) },
        { key: "task", label: "Task" },
        {
          key: "loaded",
          label: "Loaded",
          render: (m) => el("span", { class: m.loaded ? "badge on nowrap" : "badge nowrap" }, m.loaded ? "loaded" : "on disk"),
        },
        {
          key: "memory_bytes",
          label: "Memory",
          render: (m) => el("span", { class: "nowrap" }, m.loaded ? formatBytes(m.memory_bytes) : "–"),
        },
        {
          key: "serves",
          label: "Serves",
          render: (m) => el("div", null,
            (m.serves || []).map((id) => el("span", { class: "badge" }, id)),
            m.task_default ? el("span", { class: "muted" }, ` every other ${m.task} id`) : null,
            !m.task_default && !(m.serves || []).length ? el("span", { class: "muted" }, "its own name") : null),
        },
        {
          key: "actions",
          label: "",
          render: (m) => (m.loaded ? el("button", {
            "data-test": `unload-${m.name}`,
            "on:click": (event) => unload(m.name, event.currentTarget),
          }, "Unload") : null),
        },
      ], data.models);
      installed.dataset.test = "installed";
      const installable = table([
        { key: "name", label: "Model", render: (m) => el("code", null, m.name) },
        { key: "task", label: "Task", render: (m) => m.task || el("span", { class: "muted" }, "—") },
        { key: "description", label: "Description" },
        { key: "size_bytes", label: "Size", render: (m) => el("span", { class: "nowrap" }, formatBytes(m.size_bytes)) },
        {
          key: "installed",
          label: "",
          render: (m) => (m.installed
            ? el("span", { class: "badge on" }, m.default ? "installed · default" : "installed")
            : el("button", {
              class: "primary",
              "data-test": `pull-${m.name}-button`,
              "on:click": (event) => pull(m, event.currentTarget),
            }, "Pull")),
        },
      ], data.installable || []);
      installable.dataset.test = "installable";
      root.append(
        el("h1", null, "Models"),
        errors,
        memoryPanel(data),
        el("h2", null, "Installed"),
        installed,
        el("h2", null, "Model store"),
        el("p", { class: "muted" }, "Built-in models Kiln can fetch and verify (sha256). Pulling runs on the server."),
        pulls,
        installable,
      );
    }

    await render(info);
  },
};
