// Embeddings: several texts → vectors → their cosine similarities as a coloured grid.

import { api, el, notice } from "../../app.js";
import { labelled, modelPicker, runPath } from "./common.js";

const EXAMPLE = [
  "The cat sits on the mat.",
  "A kitten is resting on a rug.",
  "Stock markets fell sharply today.",
  "Shares dropped at the opening bell.",
].join("\n");

function cosine(a, b) {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i += 1) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return na && nb ? dot / Math.sqrt(na * nb) : 0;
}

/** White at 0 (or below), the accent colour at 1. */
function shade(value) {
  const t = Math.max(0, Math.min(1, value));
  const mix = (from, to) => Math.round(from + (to - from) * t);
  return `rgb(${mix(255, 217)}, ${mix(255, 72)}, ${mix(255, 15)})`;
}

function short(text) {
  return text.length > 28 ? `${text.slice(0, 27)}…` : text;
}

export function similarityGrid(texts, vectors) {
  const grid = el("div", { class: "grid", "data-test": "embeddings-grid" });
  grid.style.gridTemplateColumns = `minmax(120px, 220px) repeat(${texts.length}, minmax(48px, 1fr))`;
  grid.append(el("div", { class: "head" }, ""));
  texts.forEach((_, j) => grid.append(el("div", { class: "head", title: texts[j] }, `#${j + 1}`)));
  texts.forEach((text, i) => {
    grid.append(el("div", { class: "head", title: text }, `#${i + 1} ${short(text)}`));
    texts.forEach((_, j) => {
      const value = cosine(vectors[i], vectors[j]);
      const cell = el("div", { class: "cell", title: `${texts[i]} ↔ ${texts[j]}` }, value.toFixed(3));
      cell.style.background = shade(value);
      cell.style.color = value > 0.6 ? "#fff" : "inherit";
      grid.append(cell);
    });
  });
  return grid;
}

export function embeddingsTab(root, models) {
  const model = modelPicker(models, "Text Embeddings", "embeddings-model", ["@cf/baai/bge-small-en-v1.5"]);
  const input = el("textarea", { rows: 6, "data-test": "embeddings-input" }, EXAMPLE);
  const run = el("button", { class: "primary", "data-test": "embeddings-run" }, "Embed");
  const out = el("div", { "data-test": "embeddings-result" });
  run.addEventListener("click", async () => {
    const texts = input.value.split("\n").map((line) => line.trim()).filter(Boolean);
    out.replaceChildren();
    if (!texts.length) return;
    run.disabled = true;
    try {
      const result = await api.post(runPath(model.value), { text: texts });
      out.append(
        el("p", { class: "muted" }, `${result.shape[0]} vectors of ${result.shape[1]} dimensions`
          + `${result.pooling ? `, ${result.pooling} pooling` : ""}. Cosine similarity:`),
        similarityGrid(texts, result.data),
      );
    } catch (error) {
      notice(out, error);
    } finally {
      run.disabled = false;
    }
  });
  root.append(el("div", { class: "panel stack" },
    el("div", { class: "row" }, labelled("Model", model)),
    labelled("Texts, one per line", input),
    el("div", { class: "row" }, run),
    out));
}
