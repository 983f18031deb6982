// Playground: try every task Kiln serves, one tab each, with models from GET /kiln/models.

import { api, el } from "../app.js";
import { chatTab } from "./playground/chat.js";
import { embeddingsTab } from "./playground/embeddings.js";
import { speechTab, ttsTab } from "./playground/audio.js";
import { imageTab } from "./playground/image.js";

const TABS = [
  { id: "chat", title: "Chat", render: chatTab },
  { id: "embeddings", title: "Embeddings", render: embeddingsTab },
  { id: "speech", title: "Speech to text", render: speechTab },
  { id: "tts", title: "Text to speech", render: ttsTab },
  { id: "image", title: "Image classification", render: imageTab },
];

export default {
  id: "playground",
  title: "Playground",
  async render(root, params) {
    const { models } = await api.get("/kiln/models");
    const body = el("div");
    const buttons = TABS.map((tab) => el("button", {
      "data-test": `tab-${tab.id}`,
      "on:click": () => show(tab.id),
    }, tab.title));
    function show(id) {
      const tab = TABS.find((t) => t.id === id) || TABS[0];
      buttons.forEach((button, i) => button.classList.toggle("active", TABS[i] === tab));
      body.replaceChildren();
      body.dataset.tab = tab.id;
      tab.render(body, models);
      // Remember the tab in the address without routing again.
      history.replaceState(null, "", tab === TABS[0] ? "#/playground" : `#/playground?tab=${tab.id}`);
    }
    root.append(el("h1", null, "Playground"), el("div", { class: "tabs" }, buttons), body);
    show(params.tab);
  },
};
