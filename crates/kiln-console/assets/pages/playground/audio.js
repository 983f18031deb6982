// Speech to text (microphone or file → Whisper, with word timings) and text to speech.

import { api, el, notice } from "../../app.js";
import { labelled, modelPicker, runPath } from "./common.js";
import { startRecording } from "./wav.js";

export function speechTab(root, models) {
  const model = modelPicker(models, "Automatic Speech Recognition", "speech-model", ["@cf/openai/whisper"]);
  const record = el("button", { class: "primary", "data-test": "speech-record" }, "● Record");
  const stop = el("button", { "data-test": "speech-stop", disabled: true }, "■ Stop");
  const file = el("input", { type: "file", accept: "audio/*", "data-test": "speech-file" });
  const again = el("button", { "data-test": "speech-transcribe", disabled: true }, "Transcribe");
  const state = el("span", { class: "muted", "data-test": "speech-state" });
  const level = el("div");
  const meter = el("div", { class: "meter", style: "width: 160px" }, level);
  level.style.width = "0%";
  const player = el("div");
  const out = el("div", { "data-test": "speech-result" });
  let recorder = null;
  let audio = null;
  let timer = null;

  function setAudio(blob, label) {
    audio = blob;
    again.disabled = false;
    player.replaceChildren(el("div", { class: "muted" }, label),
      el("audio", { controls: true, src: URL.createObjectURL(blob), "data-test": "speech-audio" }));
  }

  async function transcribe() {
    if (!audio) return;
    out.replaceChildren();
    out.dataset.state = "running";
    again.disabled = true;
    state.textContent = "transcribing…";
    const began = performance.now();
    try {
      const result = await api.post(runPath(model.value), audio);
      const seconds = ((performance.now() - began) / 1000).toFixed(1);
      state.textContent = `transcribed in ${seconds} s`;
      const words = result.words || (result.segments || []).flatMap((s) => s.words || []);
      out.append(el("div", null,
        el("p", { class: "transcript", "data-test": "speech-transcript" }, (result.text || "").trim() || "(no speech heard)"),
        words.length ? el("h3", null, "Word timings") : null,
        el("div", { class: "words", "data-test": "speech-words" }, words.map((w) =>
          el("span", { class: "word" }, w.word.trim(), el("small", null, `${w.start.toFixed(2)}–${w.end.toFixed(2)} s`))))));
      out.dataset.state = "done";
    } catch (error) {
      state.textContent = "";
      out.dataset.state = "error";
      notice(out, error);
    } finally {
      again.disabled = false;
    }
  }

  record.addEventListener("click", async () => {
    out.replaceChildren();
    try {
      recorder = await startRecording((rms) => {
        level.style.width = `${Math.min(100, rms * 400)}%`;
      });
    } catch (error) {
      notice(out, new Error(`The microphone is not available: ${error.message}`));
      return;
    }
    record.disabled = true;
    stop.disabled = false;
    state.className = "recording";
    timer = setInterval(() => {
      state.textContent = `recording ${((performance.now() - recorder.started) / 1000).toFixed(1)} s`;
    }, 100);
  });

  stop.addEventListener("click", async () => {
    if (!recorder) return;
    clearInterval(timer);
    stop.disabled = true;
    const { wav, seconds } = await recorder.stop();
    recorder = null;
    record.disabled = false;
    level.style.width = "0%";
    state.className = "muted";
    setAudio(wav, `Recorded ${seconds.toFixed(1)} s (16-bit PCM WAV, ${Math.round(wav.size / 1024)} KiB)`);
    await transcribe();
  });

  file.addEventListener("change", async () => {
    const chosen = file.files && file.files[0];
    if (!chosen) return;
    setAudio(chosen, `${chosen.name} (${Math.round(chosen.size / 1024)} KiB)`);
    await transcribe();
  });
  again.addEventListener("click", transcribe);

  root.append(el("div", { class: "panel stack" },
    el("div", { class: "row" }, labelled("Model", model)),
    el("div", { class: "row" }, record, stop, meter, state),
    el("div", { class: "row" }, el("span", { class: "muted" }, "or upload an audio file:"), file, again),
    player, out));
}

function base64Blob(base64, type) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  return new Blob([bytes], { type });
}

export function ttsTab(root, models) {
  const model = modelPicker(models, "Text-to-Speech", "tts-model", ["@cf/myshell-ai/melotts", "@cf/deepgram/aura-1"]);
  const input = el("textarea", { rows: 3, "data-test": "tts-input" },
    "Kiln runs Workers AI models on your own machine, offline.");
  const run = el("button", { class: "primary", "data-test": "tts-run" }, "Speak");
  const out = el("div", { "data-test": "tts-result" });
  run.addEventListener("click", async () => {
    out.replaceChildren();
    const text = input.value.trim();
    if (!text) return;
    run.disabled = true;
    const began = performance.now();
    try {
      let blob;
      if (model.value.startsWith("@cf/deepgram/aura")) {
        // Aura answers with the audio itself.
        const response = await api.raw(runPath(model.value), { method: "POST", body: { text } });
        if (!response.ok) await api.post(runPath(model.value), { text }); // throws its error
        blob = await response.blob();
      } else {
        // MeloTTS's shape (and local voices by name): base64 MP3 in the envelope.
        const result = await api.post(runPath(model.value), { prompt: text });
        blob = base64Blob(result.audio, "audio/mpeg");
      }
      const seconds = ((performance.now() - began) / 1000).toFixed(1);
      out.append(
        el("audio", { controls: true, src: URL.createObjectURL(blob), "data-test": "tts-audio" }),
        el("p", { class: "muted" }, `${blob.type || "audio"}, ${Math.round(blob.size / 1024)} KiB, made in ${seconds} s`),
      );
      out.dataset.state = "done";
    } catch (error) {
      notice(out, error);
    } finally {
      run.disabled = false;
    }
  });
  root.append(el("div", { class: "panel stack" },
    el("div", { class: "row" }, labelled("Model", model)),
    labelled("Text", input),
    el("div", { class: "row" }, run),
    out));
}
