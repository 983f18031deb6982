#!/usr/bin/env python3
"""Kiln's speech models: Whisper real-time factor beside faster-whisper on the same audio and the
same model files, and text-to-speech real-time factor.

One run, in this order, everything on this machine and one thing at a time:

  1. `kiln serve` (release build, `--offline`, its data dir's `models` a link to the installed
     models) synthesizes a few fixed English sentences with Piper through
     `POST /client/v4/accounts/local/ai/run/@cf/deepgram/aura-1` (16 kHz linear16 WAV), after one
     warm-up request that loads the voice. TTS real-time factor = synthesis wall time (request
     sent → WAV read) / seconds of audio returned.
  2. Those WAVs, joined with 1 s of silence between them, make the test recording (16 kHz mono
     16-bit, about a minute), written to a temporary file. Its reference transcript is the
     sentences themselves.
  3. Kiln transcribes it through `POST …/ai/run/@cf/openai/whisper` (whisper-base) and
     `…/@cf/openai/whisper-tiny-en` (whisper-tiny-en), the WAV as the raw body: one warm-up call
     (loads the model), then timed runs. Kiln decodes greedily (timestamp rules, no temperature
     fallback, no conditioning on previous text) on every core, with Kiln's own Whisper model
     (kiln-engine-whisper `src/model/`: f32 encoder on candle; decoder with a KV cache, its
     one-token steps reading the weights as f16, which the CTranslate2 files store exactly), and
     always computes word timestamps (an extra decoder pass per window plus DTW); faster-whisper
     does not (`word_timestamps=False`).
  4. Kiln is stopped; faster-whisper (CTranslate2) loads the SAME model directories (Kiln's
     models are CTranslate2 files) with `compute_type` float32 (Kiln's precision) and int8
     (faster-whisper's usual CPU setting), `cpu_threads` = the machine's cores, and transcribes
     the same file with `beam_size=1, temperature=0.0, language="en", vad_filter=False,
     condition_on_previous_text=False` (greedy, like Kiln); the segment generator is consumed
     fully. One warm-up call, then timed runs.

Whisper real-time factor = wall time of one transcription / seconds of audio (lower is faster;
below 1 is faster than real time). WER = word edit distance to the reference sentences / their
word count, after lowercasing and dropping punctuation.

Needs faster-whisper in the Python running it (`scripts/bench speech` installs it into the bench
venv and builds Kiln first). The server it starts is killed on exit and its temporary files are
removed.
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import io
import json
import os
import platform
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import wave
from dataclasses import dataclass, field
from pathlib import Path

BENCHES_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCHES_DIR.parent
if str(BENCHES_DIR) not in sys.path:  # bench_common lives beside this script, however it is run
    sys.path.insert(0, str(BENCHES_DIR))

from bench_common import (  # noqa: E402
    CACHE_DIR, DEFAULT_LOG_DIR, Server, cpu_model, default_kiln_bin, free_port, kiln_revision,
    load_average, machine_description, stop_servers_on_exit,
)

DEFAULT_MODELS_DIR = CACHE_DIR / "data" / "models"
STARTUP_TIMEOUT_S = 300
REQUEST_TIMEOUT_S = 900
ACCOUNT = "local"
TTS_MODEL_ID = "@cf/deepgram/aura-1"
SAMPLE_RATE = 16_000
SILENCE_S = 1.0

# Kiln model name → the catalog id whose route serves it (default-kiln.toml).
WHISPER_ROUTES = {
    "whisper-base": "@cf/openai/whisper",
    "whisper-tiny-en": "@cf/openai/whisper-tiny-en",
}

WARMUP_SENTENCE = "This sentence only loads the voice."
# Plain words (no numbers, names or contractions) so that WER measures recognition, not spelling.
SENTENCES = [
    "The old lighthouse keeper climbed the narrow stairs every evening to light the great lamp, "
    "and from the top he watched the fishing boats return slowly across the grey water before "
    "the storm arrived.",
    "Fresh bread from the village bakery was sold out before nine in the morning, so people "
    "started to queue outside the door in the dark, talking quietly about the weather and the "
    "price of flour.",
    "When the students opened the heavy wooden box in the library, they found a collection of "
    "letters written by a young soldier to his mother, tied together with a faded blue ribbon.",
    "Our train was delayed for almost an hour because a fallen tree blocked the line near the "
    "river, and the conductor walked through every carriage to apologise and offer passengers "
    "a cup of tea.",
    "Scientists believe that the small bright comet will pass close to the earth next spring, "
    "and on a clear night it should be visible without a telescope from almost anywhere in the "
    "northern half of the world.",
]


@dataclass
class Transcription:
    engine: str
    model: str
    compute: str
    route: str = ""
    load_s: float | None = None   # Kiln: warm-up call (load + one transcription); fw: WhisperModel()
    warmup_s: float | None = None
    walls: list = field(default_factory=list)
    busy_cores: float | None = None
    text: str = ""
    wer: float | None = None
    notes: list = field(default_factory=list)
    failures: list = field(default_factory=list)

    @property
    def wall(self) -> float | None:
        return statistics.median(self.walls) if self.walls else None


@dataclass
class Synthesis:
    text: str
    wall_s: float
    audio_s: float
    wav: bytes


# ---------------------------------------------------------------------------------------------
# HTTP and audio


def post(url: str, body: bytes, content_type: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"content-type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def wav_frames(data: bytes) -> tuple[bytes, float]:
    """The PCM frames of a 16 kHz mono 16-bit WAV and their duration in seconds."""
    with wave.open(io.BytesIO(data)) as wav:
        shape = (wav.getframerate(), wav.getnchannels(), wav.getsampwidth())
        if shape != (SAMPLE_RATE, 1, 2):
            raise RuntimeError(f"expected a {SAMPLE_RATE} Hz mono 16-bit WAV, got (rate, channels, "
                               f"bytes per sample) {shape}")
        frames = wav.readframes(wav.getnframes())
    return frames, len(frames) / 2 / SAMPLE_RATE


def write_wav(path: Path, pcm: bytes) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(pcm)


# ---------------------------------------------------------------------------------------------
# WER


def words(text: str) -> list[str]:
    text = text.lower().replace("’", "'").replace("-", " ")
    return re.findall(r"[a-z0-9]+(?:'[a-z0-9]+)*", text)


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words, by word-level edit distance."""
    ref, hyp = words(reference), words(hypothesis)
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h))
        previous = current
    return previous[-1] / max(len(ref), 1)


# ---------------------------------------------------------------------------------------------
# Kiln


def tts(kiln_base: str, text: str) -> Synthesis:
    body = json.dumps({"text": text, "encoding": "linear16", "container": "wav",
                       "sample_rate": SAMPLE_RATE}).encode()
    started = time.perf_counter()
    status, answer = post(f"{kiln_base}/client/v4/accounts/{ACCOUNT}/ai/run/{TTS_MODEL_ID}", body,
                          "application/json")
    wall = time.perf_counter() - started
    if status != 200:
        raise RuntimeError(f"TTS: {status} {answer[:300]!r}")
    _, seconds = wav_frames(answer)
    return Synthesis(text, wall, seconds, answer)


def kiln_transcribe(args, kiln: Server, model: str, audio: bytes, audio_s: float,
                    reference: str) -> Transcription:
    route = WHISPER_ROUTES[model]
    row = Transcription("Kiln", model, "f32, f16 decoder weights", route=route)
    url = f"{kiln.base}/client/v4/accounts/{ACCOUNT}/ai/run/{route}"

    def once() -> tuple[float, str]:
        started = time.perf_counter()
        status, answer = post(url, audio, "audio/wav")
        wall = time.perf_counter() - started
        if status != 200:
            raise RuntimeError(f"{route}: {status} {answer[:300]!r}")
        return wall, json.loads(answer)["result"]["text"]

    try:
        print(f"bench: Kiln {model}: warm-up (loads the model)", file=sys.stderr)
        row.load_s, _ = once()
        texts = []
        cpu_before = kiln.cpu_seconds()
        for run in range(args.runs):
            wall, text = once()
            row.walls.append(wall)
            texts.append(text)
            print(f"bench: Kiln {model} run {run + 1}: {wall:.2f} s, RTF {wall / audio_s:.3f}", file=sys.stderr)
        cpu_after = kiln.cpu_seconds()
        if cpu_before is not None and cpu_after is not None:
            row.busy_cores = (cpu_after - cpu_before) / sum(row.walls)
        row.text = texts[-1]
        if len(set(texts)) > 1:
            row.notes.append("the runs' transcripts differ")
        row.wer = word_error_rate(reference, row.text)
    except (RuntimeError, urllib.error.URLError, OSError, KeyError, ValueError) as error:
        row.failures.append(f"{type(error).__name__}: {error}")
    return row


# ---------------------------------------------------------------------------------------------
# faster-whisper


def faster_whisper_transcribe(args, model: str, compute: str, path: Path, audio_s: float,
                              reference: str) -> Transcription:
    row = Transcription("faster-whisper", model, compute)
    try:
        from faster_whisper import WhisperModel

        def cpu() -> float:
            usage = resource.getrusage(resource.RUSAGE_SELF)
            return usage.ru_utime + usage.ru_stime

        started = time.perf_counter()
        whisper = WhisperModel(str(args.models_dir / model), device="cpu", compute_type=compute,
                               cpu_threads=args.threads)
        row.load_s = time.perf_counter() - started

        def once() -> tuple[float, str]:
            started = time.perf_counter()
            segments, _info = whisper.transcribe(
                str(path), beam_size=1, temperature=0.0, language="en", vad_filter=False,
                condition_on_previous_text=False)
            text = "".join(segment.text for segment in segments).strip()  # decodes as it goes
            return time.perf_counter() - started, text

        print(f"bench: faster-whisper {model} {compute}: warm-up", file=sys.stderr)
        row.warmup_s, _ = once()
        texts = []
        cpu_before = cpu()
        for run in range(args.runs):
            wall, text = once()
            row.walls.append(wall)
            texts.append(text)
            print(f"bench: faster-whisper {model} {compute} run {run + 1}: {wall:.2f} s, "
                  f"RTF {wall / audio_s:.3f}", file=sys.stderr)
        row.busy_cores = (cpu() - cpu_before) / sum(row.walls)
        row.text = texts[-1]
        if len(set(texts)) > 1:
            row.notes.append("the runs' transcripts differ")
        row.wer = word_error_rate(reference, row.text)
        del whisper
    except Exception as error:  # noqa: BLE001 - reported, the run goes on
        row.failures.append(f"{type(error).__name__}: {error}")
    return row


# ---------------------------------------------------------------------------------------------
# Report


def fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def package_version(name: str) -> str:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001 - only for the report
        return "(not installed)"


def report(args, syntheses: list[Synthesis], audio_s: float, rows: list[Transcription],
           failures: list[str]) -> str:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    reference_words = len(words(" ".join(SENTENCES)))
    lines = [
        f"Generated by `benches/speech_bench.py` on {now}.",
        "",
        f"- Command: `{args.command_line}`",
        f"- Machine: {machine_description()}; {cpu_model()}. One thing ran at a time (the HTTP "
        f"client and Kiln share the CPUs; Kiln was stopped before faster-whisper ran). Load average "
        f"(1/5/15 min) at start: {args.load_at_start}; at end: {load_average()}.",
        f"- Versions: Kiln {kiln_revision()} (release build; Whisper: Kiln's model on candle, f32 "
        f"encoder, KV-cached decoder with f16 weights, word timestamps included; every core; "
        f"Piper on ONNX Runtime), Python {platform.python_version()}, faster-whisper "
        f"{package_version('faster-whisper')}, ctranslate2 {package_version('ctranslate2')}. "
        f"faster-whisper: {args.install_note}.",
        f"- Audio: {len(SENTENCES)} fixed English sentences ({reference_words} words) synthesized by "
        f"Kiln's TTS (piper-en-us-joe-medium, 16 kHz linear16 WAV), joined with {SILENCE_S:g} s "
        f"silences: **{audio_s:.1f} s**, 16 kHz mono 16-bit. The reference transcript is the "
        "sentences' text.",
        "- Models: the same CTranslate2 directories (`~/.cache/kiln/data/models/whisper-base`, "
        "`…/whisper-tiny-en`, fp16 weights on disk) for both engines. Kiln: `POST "
        "/client/v4/accounts/local/ai/run/@cf/openai/whisper` (→ whisper-base) and "
        "`…/@cf/openai/whisper-tiny-en`, the WAV as the raw body (language detected, not given); "
        "greedy with timestamps, no temperature fallback, no conditioning on previous text. "
        "faster-whisper: `WhisperModel(dir, device=\"cpu\", compute_type=…, "
        f"cpu_threads={args.threads})`, `transcribe(path, beam_size=1, temperature=0.0, "
        "language=\"en\", vad_filter=False, condition_on_previous_text=False)`, segments consumed "
        "fully; in process (its time includes decoding the WAV file; Kiln's includes HTTP on "
        "127.0.0.1 and decoding the body).",
        f"- RTF = median wall time of {args.runs} transcriptions (after one warm-up) / audio "
        "seconds; lower is faster. Busy cores = CPU time / wall time over the timed runs (Kiln's "
        "process; the Python process for faster-whisper). WER = word edit distance / reference "
        "words, lowercased, punctuation dropped. Kiln's first call (load + transcription) and "
        "faster-whisper's model load are listed apart.",
    ]
    by_model: dict[str, list[Transcription]] = {}
    for row in rows:
        by_model.setdefault(row.model, []).append(row)
    for model, model_rows in by_model.items():
        lines += ["", f"### {model}", "",
                  "| engine | compute type | RTF | median s | runs s | busy cores | WER | load / first call s |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in model_rows:
            rtf = None if r.wall is None else r.wall / audio_s
            first = (f"{r.load_s:.2f} (load + 1st transcription)" if r.engine == "Kiln" and r.load_s is not None
                     else f"{fmt(r.load_s, 2)} load, {fmt(r.warmup_s, 2)} 1st transcription")
            lines.append(
                f"| {r.engine} | {r.compute} | **{fmt(rtf)}** | {fmt(r.wall, 2)} | "
                f"{', '.join(f'{w:.2f}' for w in r.walls) or '–'} | {fmt(r.busy_cores, 2)} | "
                f"{'–' if r.wer is None else f'{r.wer:.1%}'} | {first} |")
        lines.append("")
        kiln = next((r for r in model_rows if r.engine == "Kiln" and r.wall), None)
        for peer in model_rows:
            if kiln and peer.engine != "Kiln" and peer.wall:
                lines.append(f"- Kiln RTF / faster-whisper {peer.compute} RTF: **{kiln.wall / peer.wall:.2f}×** "
                             f"({'Kiln slower' if kiln.wall > peer.wall else 'Kiln faster'})")
        for r in model_rows:
            for note in r.notes:
                lines.append(f"- {r.engine} {r.compute}: {note}")
            for failure in r.failures:
                lines.append(f"- {r.engine} {r.compute}: FAILED: {failure}")
        lines.append("")
        lines.append("<details><summary>Transcripts</summary>")
        lines.append("")
        for r in model_rows:
            if r.text:
                lines.append(f"- {r.engine} {r.compute}: {r.text}")
        lines.append("")
        lines.append("</details>")

    lines += ["", "### Text-to-speech (piper-en-us-joe-medium via `@cf/deepgram/aura-1`)", "",
              f"RTF = synthesis wall time (request → whole 16 kHz WAV read) / seconds of audio, after a "
              f"warm-up request that loads the voice ({fmt(args.tts_warmup_s, 2)} s).", "",
              "| sentence | characters | audio s | synthesis s | RTF |", "|---|---|---|---|---|"]
    for i, s in enumerate(syntheses, 1):
        lines.append(f"| {i} | {len(s.text)} | {s.audio_s:.2f} | {s.wall_s:.3f} | {s.wall_s / s.audio_s:.3f} |")
    if syntheses:
        wall = sum(s.wall_s for s in syntheses)
        audio = sum(s.audio_s for s in syntheses)
        lines.append(f"| **total** | {sum(len(s.text) for s in syntheses)} | {audio:.2f} | {wall:.3f} "
                     f"| **{wall / audio:.3f}** |")
    for failure in failures:
        lines.append(f"- FAILED: {failure}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(WHISPER_ROUTES),
                   help="Whisper models, comma-separated, of " + ", ".join(WHISPER_ROUTES))
    p.add_argument("--compute-types", default="float32,int8", help="faster-whisper compute types")
    p.add_argument("--runs", type=int, default=3, help="timed transcriptions per engine (after one warm-up)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="faster-whisper's cpu_threads (default: every core, as Kiln's candle uses)")
    p.add_argument("--skip-faster-whisper", action="store_true")
    p.add_argument("--kiln-bin", default=default_kiln_bin())
    p.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR,
                   help="installed models, linked into the temporary data dir of the Kiln it starts")
    p.add_argument("--log-dir", type=Path, default=DEFAULT_LOG_DIR)
    p.add_argument("--keep-audio", action="store_true", help="keep the temporary dir (the test recording)")
    p.add_argument("--output", type=Path, help="also write the markdown report to this file")
    args = p.parse_args()
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    for model in args.models:
        if model not in WHISPER_ROUTES:
            p.error(f"unknown model {model!r}")
    args.compute_types = [c.strip() for c in args.compute_types.split(",") if c.strip()]
    args.command_line = " ".join([os.environ.get("KILN_BENCH_COMMAND", sys.argv[0]), *map(shlex.quote, sys.argv[1:])])
    args.install_note = os.environ.get("KILN_BENCH_INSTALL", "installed beforehand")
    return args


def main() -> int:
    args = parse_args()
    args.load_at_start = load_average()
    args.log_dir.mkdir(parents=True, exist_ok=True)
    args.models_dir = args.models_dir.expanduser().resolve()
    stop_servers_on_exit()
    work = Path(tempfile.mkdtemp(prefix="kiln-speech-bench-"))
    if args.keep_audio:
        print(f"bench: keeping {work}", file=sys.stderr)
    else:
        atexit.register(shutil.rmtree, work, True)

    data_dir = work / "data"
    data_dir.mkdir()
    (data_dir / "models").symlink_to(args.models_dir)
    port = free_port()
    # Only the small embedding model loads at start (the speech models load on first request).
    argv = [args.kiln_bin, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir),
            "--models", "all-minilm-l6-v2", "--offline"]
    kiln = Server("kiln", argv, port, "/health", args.log_dir / "speech-kiln.log", STARTUP_TIMEOUT_S)
    print(f"bench: starting Kiln: {kiln.command}", file=sys.stderr)
    kiln.start()

    failures: list[str] = []
    syntheses: list[Synthesis] = []
    args.tts_warmup_s = None
    try:
        args.tts_warmup_s = tts(kiln.base, WARMUP_SENTENCE).wall_s
        for sentence in SENTENCES:
            s = tts(kiln.base, sentence)
            syntheses.append(s)
            print(f"bench: TTS {s.audio_s:.2f} s of audio in {s.wall_s:.3f} s (RTF {s.wall_s / s.audio_s:.3f})",
                  file=sys.stderr)
    except (RuntimeError, urllib.error.URLError, OSError, wave.Error) as error:
        kiln.stop()
        print(f"bench: TTS failed, so there is no test recording: {error}", file=sys.stderr)
        return 1

    silence = b"\0\0" * int(SILENCE_S * SAMPLE_RATE)
    pcm = silence.join(wav_frames(s.wav)[0] for s in syntheses)
    recording = work / "recording.wav"
    write_wav(recording, pcm)
    audio = recording.read_bytes()
    audio_s = len(pcm) / 2 / SAMPLE_RATE
    reference = " ".join(SENTENCES)
    print(f"bench: test recording {audio_s:.1f} s: {recording}", file=sys.stderr)

    rows: list[Transcription] = []
    for model in args.models:
        rows.append(kiln_transcribe(args, kiln, model, audio, audio_s, reference))
    kiln.stop()

    if not args.skip_faster_whisper:
        for model in args.models:
            for compute in args.compute_types:
                rows.append(faster_whisper_transcribe(args, model, compute, recording, audio_s, reference))
    rows.sort(key=lambda r: args.models.index(r.model))  # stable: Kiln first within a model
    for r in rows:
        for failure in r.failures:
            print(f"bench: {r.engine} {r.model} {r.compute}: FAILED: {failure}", file=sys.stderr)

    text = report(args, syntheses, audio_s, rows, failures)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        print(f"bench: wrote {args.output}", file=sys.stderr)
    return 1 if failures or any(r.failures for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
