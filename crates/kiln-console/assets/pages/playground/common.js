// What the playground's tabs share: the model picker and the run path.

import { api, el } from "../../app.js";

/** The run route of `model` (a catalog id such as `@cf/openai/whisper`, or a local name). */
export function runPath(model) {
  return api.accountPath(`/ai/run/${model}`);
}

/**
 * A `<select>` of every installed model of `task` and the catalog ids mapped to it, each id
 * labelled with the local model that answers it. `preferred` ids come first when present.
 */
export function modelPicker(models, task, test, preferred = []) {
  const options = [];
  for (const model of models.filter((m) => m.task === task)) {
    options.push({ value: model.name, label: `${model.name} (local)` });
    for (const id of model.serves || []) options.push({ value: id, label: `${id} → ${model.name}` });
  }
  const rank = (value) => {
    const index = preferred.indexOf(value);
    return index < 0 ? preferred.length : index;
  };
  options.sort((a, b) => rank(a.value) - rank(b.value));
  const select = el("select", { "data-test": test, class: "grow" },
    options.map((o) => el("option", { value: o.value }, o.label)));
  if (!options.length) {
    select.append(el("option", { value: "" }, `no ${task} model installed (see Models)`));
    select.disabled = true;
  }
  return select;
}

export function labelled(text, control) {
  return el("label", { class: "field" }, text, control);
}
