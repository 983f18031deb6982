// Image classification: an uploaded image → labels with scores as bars.

import { api, el, notice } from "../../app.js";
import { labelled, modelPicker, runPath } from "./common.js";

export function labelBars(labels) {
  return el("div", { "data-test": "image-labels" }, labels.map((item) => {
    const fill = el("div", { class: "fill" });
    fill.style.width = `${Math.max(0.5, item.score * 100).toFixed(1)}%`;
    return el("div", { class: "bar" },
      el("span", { class: "label", title: item.label }, item.label),
      el("span", { class: "track" }, fill),
      el("span", { class: "value" }, `${(item.score * 100).toFixed(1)}%`));
  }));
}

export function imageTab(root, models) {
  const model = modelPicker(models, "Image Classification", "image-model", ["@cf/microsoft/resnet-50"]);
  const file = el("input", { type: "file", accept: "image/*", "data-test": "image-file" });
  const preview = el("div");
  const out = el("div", { class: "grow", "data-test": "image-result" });
  file.addEventListener("change", async () => {
    const chosen = file.files && file.files[0];
    out.replaceChildren();
    if (!chosen) return;
    preview.replaceChildren(el("img", { class: "preview", src: URL.createObjectURL(chosen), alt: chosen.name }));
    out.dataset.state = "running";
    try {
      const labels = await api.post(runPath(model.value), chosen);
      out.append(el("h3", null, "Labels"), labelBars(labels));
      out.dataset.state = "done";
    } catch (error) {
      out.dataset.state = "error";
      notice(out, error);
    }
  });
  root.append(el("div", { class: "panel stack" },
    el("div", { class: "row" }, labelled("Model", model), labelled("Image (JPEG, PNG or WebP)", file)),
    el("div", { class: "row top" }, preview, out)));
}
