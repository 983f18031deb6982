#!/usr/bin/env python3
"""Kiln's speech models: Whisper real-time factor beside faster-whisper on the same audio and the
same model files (a one-minute recording and a long one), live transcription latency over
Kiln's WebSocket, and text-to-speech real-time factor.

One run, in this order, everything on this machine and one thing at a time:

  1. `kiln serve` (release build, `--offline`, its data dir's `models` a link to the installed
     models; a config file that points `@cf/deepgram/nova-3` at `--ws-model` and raises
     `limits.audio.max_seconds` above the long recording, plus `--max-body-bytes` and
     `--request-timeout-secs` large enough for it) synthesizes a few fixed English sentences with
     Piper through `POST /client/v4/accounts/local/ai/run/@cf/deepgram/aura-1` (16 kHz linear16
     WAV), after one warm-up request that loads the voice. TTS real-time factor = synthesis wall
     time (request sent → WAV read) / seconds of audio returned. With `--long-minutes` > 0 a few
     more sentences (LONG_SENTENCES, not in the TTS table) are synthesized the same way.
  2. Those WAVs, joined with 1 s of silence between them, make the test recording (16 kHz mono
     16-bit, about a minute), written to a temporary file. Its reference transcript is the
     sentences themselves. The long recording (`--long-minutes`, default 10; 0: none) is every
     sentence (SENTENCES + LONG_SENTENCES), each round in a fixed shuffled order (seed
     LONG_SEED, never the same sentence twice in a row), joined with 1 s silences, until it is at
     least that long; its reference is those sentences in that order.
  3. Kiln transcribes the test recording through `POST …/ai/run/@cf/openai/whisper`
     (whisper-base) and `…/@cf/openai/whisper-tiny-en` (whisper-tiny-en), the WAV as the raw
     body: one warm-up call (loads the model), then timed runs. Then each model transcribes the
     long recording the same way, `--long-runs` timed calls and no warm-up (the model is
     loaded). Kiln decodes greedily (timestamp rules, no temperature fallback, no conditioning on
     previous text) on every core, with Kiln's own Whisper model (kiln-engine-whisper
     `src/model/`: Kiln's own encoder on kiln-kernels (int8 linear layers on AVX-512 VNNI where
     the CPU has it, f32 elsewhere); KV-cached decoder, int8 weights on VNNI CPUs (f16
     matrix-vector products elsewhere)), and always computes word timestamps (an extra decoder
     pass per window plus DTW); faster-whisper does not (`word_timestamps=False`).
  4. Live transcription (benches/speech_ws.py), `--ws-sentences` (default 3) of the TTS
     sentences, each streamed twice over the WebSocket `GET …/ai/run/@cf/deepgram/nova-3?
     encoding=linear16&sample_rate=16000&interim_results=true&punctuate=true` (served by
     `--ws-model`, already loaded by step 3) as 100 ms binary frames of 16 kHz linear16 PCM at
     real-time pace, then `{"type":"CloseStream"}` right after the last frame: (a) the sentence
     alone, so the final is the one CloseStream forces (`from_finalize`) unless Kiln's VAD saw a
     500 ms pause first; (b) the sentence plus 1 s of digital silence, so the VAD's end of
     utterance (`speech_final: true`, Nova's end of turn; 500 ms endpointing) makes the final.
     Measured per stream: first interim `Results` − first frame sent; last final `Results` −
     last frame of the sentence sent (end of speech; in (b) the silence frames come after it);
     WER of the finals' transcripts joined, against the sentence.
  5. Kiln is stopped; faster-whisper (CTranslate2) loads the SAME model directories (Kiln's
     models are CTranslate2 files) with `compute_type` float32 and int8 (faster-whisper's usual
     CPU setting), `cpu_threads` = the machine's cores, and transcribes the same file with
     `beam_size=1, temperature=0.0, language="en", vad_filter=False,
     condition_on_previous_text=False` (greedy, like Kiln); the segment generator is consumed
     fully. One warm-up call, then timed runs; then the long recording with the same loaded
     model, `--long-runs` timed calls.

Whisper real-time factor = wall time of one transcription / seconds of audio (lower is faster;
below 1 is faster than real time). Words per second (long recording) = reference words / wall
seconds. WER = word edit distance to the reference sentences / their word count, after
lowercasing and dropping punctuation.

Needs faster-whisper and websockets in the Python running it (`scripts/bench speech` installs
them into the bench venv and builds Kiln first). The server it starts is killed on exit and its
temporary files are removed.
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import io
import json
import os
import platform
import random
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
from speech_ws import LiveRun, median_of, stream_sentence  # noqa: E402

DEFAULT_MODELS_DIR = CACHE_DIR / "data" / "models"
STARTUP_TIMEOUT_S = 300
REQUEST_TIMEOUT_S = 900
ACCOUNT = "local"
TTS_MODEL_ID = "@cf/deepgram/aura-1"
SAMPLE_RATE = 16_000
SILENCE_S = 1.0
LONG_SEED = 19  # the long recording's sentence order
LIVE_SILENCE_S = 1.0  # the trailing silence of the second live variant
KILN_COMPUTE = "int8 on VNNI CPUs, else f32"

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
# More sentences for the long recording only, in the same plain style.
LONG_SENTENCES = [
    "The children built a small boat from old boards and rope, painted it bright red, and "
    "pushed it into the pond to see whether it would float.",
    "Every winter the farmer stored apples in a cool cellar under the house, and by the end of "
    "the season the whole kitchen smelled of sweet fruit.",
    "The museum opened a new hall for ancient maps, where visitors can follow the routes of "
    "early sailors across oceans that nobody had measured before.",
    "After the long meeting the manager asked everyone to write down one simple idea that could "
    "make the office quieter and more pleasant to work in.",
    "A gentle rain fell over the mountain road all afternoon, and the drivers slowed down as the "
    "clouds settled between the tall dark pine trees.",
]


@dataclass
class Transcription:
    engine: str
    model: str
    compute: str
    route: str = ""
    load_s: float | None = None    # faster-whisper: WhisperModel()
    warmup_s: float | None = None  # the untimed first call (Kiln's loads the model)
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
class Recording:
    name: str
    path: Path
    seconds: float
    reference: str
    runs: int
    warm_up: bool  # one untimed call first (the short recording: it loads the model)


@dataclass
class Synthesis:
    text: str
    wall_s: float
    audio_s: float
    wav: bytes


# ---------------------------------------------------------------------------------------------
# HTTP and audio


def post(url: str, body: bytes, content_type: str, timeout_s: float = REQUEST_TIMEOUT_S) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"content-type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
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


def make_recording(path: Path, name: str, syntheses: list[Synthesis], runs: int,
                   warm_up: bool) -> Recording:
    """The syntheses' audio joined with SILENCE_S silences, written to `path`."""
    silence = b"\0\0" * int(SILENCE_S * SAMPLE_RATE)
    pcm = silence.join(wav_frames(s.wav)[0] for s in syntheses)
    write_wav(path, pcm)
    reference = " ".join(s.text for s in syntheses)
    return Recording(name, path, len(pcm) / 2 / SAMPLE_RATE, reference, runs, warm_up)


def long_order(syntheses: list[Synthesis], seconds: float) -> list[Synthesis]:
    """Rounds of every synthesis, each shuffled (fixed seed), until they last `seconds` with the
    silences; never the same sentence twice in a row."""
    shuffle = random.Random(LONG_SEED).shuffle
    order: list[Synthesis] = []
    while sum(s.audio_s for s in order) + SILENCE_S * max(len(order) - 1, 0) < seconds:
        round_ = list(syntheses)
        shuffle(round_)
        if order and round_[0] is order[-1]:
            round_.append(round_.pop(0))
        order += round_
    while len(order) > 1 and sum(s.audio_s for s in order[:-1]) + SILENCE_S * (len(order) - 2) >= seconds:
        order.pop()  # the last round only as far as needed
    return order


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


def request_timeout_s(audio_s: float) -> float:
    """How long one transcription of `audio_s` seconds may take, client and server side."""
    return max(REQUEST_TIMEOUT_S, 3 * audio_s + 300)


def timed_runs(row: Transcription, recording: Recording, once, cpu, label: str) -> None:
    """`once()` → (wall s, text): an untimed warm-up if the recording asks, then its runs."""
    if recording.warm_up:
        print(f"bench: {label}: warm-up", file=sys.stderr)
        row.warmup_s, _ = once()
    texts = []
    cpu_before = cpu()
    for run in range(recording.runs):
        wall, text = once()
        row.walls.append(wall)
        texts.append(text)
        print(f"bench: {label} run {run + 1}: {wall:.2f} s, RTF {wall / recording.seconds:.3f}",
              file=sys.stderr)
    cpu_after = cpu()
    if cpu_before is not None and cpu_after is not None and row.walls:
        row.busy_cores = (cpu_after - cpu_before) / sum(row.walls)
    row.text = texts[-1] if texts else ""
    if len(set(texts)) > 1:
        row.notes.append("the runs' transcripts differ")
    row.wer = word_error_rate(recording.reference, row.text)


def kiln_transcribe(kiln: Server, model: str, recording: Recording) -> Transcription:
    route = WHISPER_ROUTES[model]
    row = Transcription("Kiln", model, KILN_COMPUTE, route=route)
    url = f"{kiln.base}/client/v4/accounts/{ACCOUNT}/ai/run/{route}"
    audio = recording.path.read_bytes()

    def once() -> tuple[float, str]:
        started = time.perf_counter()
        status, answer = post(url, audio, "audio/wav", request_timeout_s(recording.seconds))
        wall = time.perf_counter() - started
        if status != 200:
            raise RuntimeError(f"{route}: {status} {answer[:300]!r}")
        return wall, json.loads(answer)["result"]["text"]

    try:  # the warm-up call loads the model: it is Kiln's "load + 1st transcription"
        timed_runs(row, recording, once, kiln.cpu_seconds, f"Kiln {model} {recording.name}")
    except (RuntimeError, urllib.error.URLError, OSError, KeyError, ValueError) as error:
        row.failures.append(f"{type(error).__name__}: {error}")
    return row


def kiln_live(kiln: Server, syntheses: list[Synthesis], count: int) -> list[LiveRun]:
    """The first `count` sentences over nova-3's WebSocket, alone and with a trailing silence."""
    runs = []
    for index, s in enumerate(syntheses[:count], 1):
        for silence_s in (0.0, LIVE_SILENCE_S):
            run = stream_sentence(kiln.base, ACCOUNT, index, wav_frames(s.wav)[0], s.text, silence_s,
                                  word_error_rate)
            print(f"bench: live sentence {index} + {silence_s:g} s silence: first interim "
                  f"{fmt(run.first_interim_s, 2)} s, final {fmt(run.final_s, 2)} s after the speech "
                  f"({run.final_by or 'none'}), WER {fmt(run.wer)} {'; '.join(run.failures)}",
                  file=sys.stderr)
            runs.append(run)
    return runs


# ---------------------------------------------------------------------------------------------
# faster-whisper


def faster_whisper_transcribe(args, model: str, compute: str,
                              recordings: list[Recording]) -> list[Transcription]:
    """One row per recording, all from one loaded model."""
    rows = [Transcription("faster-whisper", model, compute) for _ in recordings]
    try:
        from faster_whisper import WhisperModel

        started = time.perf_counter()
        whisper = WhisperModel(str(args.models_dir / model), device="cpu", compute_type=compute,
                               cpu_threads=args.threads)
        rows[0].load_s = time.perf_counter() - started
    except Exception as error:  # noqa: BLE001 - reported, the run goes on
        for row in rows:
            row.failures.append(f"{type(error).__name__}: {error}")
        return rows

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    for row, recording in zip(rows, recordings):
        def once() -> tuple[float, str]:
            started = time.perf_counter()
            segments, _info = whisper.transcribe(
                str(recording.path), beam_size=1, temperature=0.0, language="en", vad_filter=False,
                condition_on_previous_text=False)
            text = "".join(segment.text for segment in segments).strip()  # decodes as it goes
            return time.perf_counter() - started, text

        try:
            timed_runs(row, recording, once, cpu, f"faster-whisper {model} {compute} {recording.name}")
        except Exception as error:  # noqa: BLE001 - reported, the run goes on
            row.failures.append(f"{type(error).__name__}: {error}")
    del whisper
    return rows


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


def cpu_has_vnni() -> bool:
    try:
        return "avx512_vnni" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def report(args, syntheses: list[Synthesis], short: Recording, rows: list[Transcription],
           long: Recording | None, long_rows: list[Transcription], live_runs: list[LiveRun],
           failures: list[str]) -> str:
    audio_s = short.seconds
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    reference_words = len(words(" ".join(SENTENCES)))
    lines = [
        f"Generated by `benches/speech_bench.py` on {now}.",
        "",
        f"- Command: `{args.command_line}`",
        f"- Machine: {machine_description()}; {cpu_model()}. One thing ran at a time (the HTTP "
        f"client and Kiln share the CPUs; Kiln was stopped before faster-whisper ran). Load average "
        f"(1/5/15 min) at start: {args.load_at_start}; at end: {load_average()}.",
        f"- Versions: Kiln {kiln_revision()} (release build; Whisper: Kiln's own encoder on "
        f"kiln-kernels (int8 linear layers on AVX-512 VNNI where the CPU has it, f32 elsewhere), "
        f"KV-cached decoder, int8 weights on VNNI CPUs (f16 matrix-vector products elsewhere); this "
        f"CPU {'has' if cpu_has_vnni() else 'lacks'} avx512_vnni; word timestamps included; every "
        f"core; Piper on ONNX Runtime), Python {platform.python_version()}, faster-whisper "
        f"{package_version('faster-whisper')}, ctranslate2 {package_version('ctranslate2')}, "
        f"websockets {package_version('websockets')}. "
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
            first = (f"{r.warmup_s:.2f} (load + 1st transcription)" if r.engine == "Kiln" and r.warmup_s is not None
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
    if long:
        lines += long_section(long, long_rows)
    if live_runs:
        lines += live_section(args, live_runs)

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


def long_section(long: Recording, rows: list[Transcription]) -> list[str]:
    reference_words = len(words(long.reference))
    lines = ["", f"### Long recording ({long.seconds / 60:.1f} min)", "",
             f"The {len(SENTENCES) + len(LONG_SENTENCES)} sentences (the {len(SENTENCES)} above and "
             f"{len(LONG_SENTENCES)} more), each round in a fixed shuffled order (seed {LONG_SEED}), "
             f"joined with {SILENCE_S:g} s silences: {long.seconds:.1f} s, {reference_words} reference "
             f"words. Same routes and options as above; {long.runs} timed transcription(s) per row "
             "(median), no warm-up (the models are loaded by then). Words/s = reference words / wall "
             "seconds.", "",
             "| model | engine | compute type | RTF | wall s | words/s | busy cores | WER |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rtf = None if r.wall is None else r.wall / long.seconds
        rate = None if r.wall is None else reference_words / r.wall
        lines.append(f"| {r.model} | {r.engine} | {r.compute} | **{fmt(rtf)}** | {fmt(r.wall, 1)} | "
                     f"{fmt(rate, 1)} | {fmt(r.busy_cores, 2)} | {'–' if r.wer is None else f'{r.wer:.1%}'} |")
    notes = [f"- {r.model} {r.engine} {r.compute}: {note}" for r in rows for note in r.notes]
    notes += [f"- {r.model} {r.engine} {r.compute}: FAILED: {failure}" for r in rows for failure in r.failures]
    return lines + ([""] + notes if notes else [])


def live_section(args, runs: list[LiveRun]) -> list[str]:
    served = next((r.served for r in runs if r.served), args.ws_model)
    lines = ["", f"### Live transcription (WebSocket `@cf/deepgram/nova-3`, served by {served})", "",
             "`GET /client/v4/accounts/local/ai/run/@cf/deepgram/nova-3?encoding=linear16&"
             "sample_rate=16000&interim_results=true&punctuate=true` as a WebSocket (Python "
             "`websockets`, loopback). Each sentence's 16 kHz linear16 PCM goes in 100 ms binary frames "
             "at real-time pace, then `{\"type\":\"CloseStream\"}` right after the last frame; twice: "
             f"the sentence alone, and the sentence plus {LIVE_SILENCE_S:g} s of digital silence (Kiln's "
             "VAD ends an utterance after 500 ms of non-speech: `speech_final: true`, Nova's end of "
             "turn; without that pause the final is the one CloseStream forces). First interim = "
             "first interim `Results` − first frame sent. Final = last final `Results` − last frame "
             "of the sentence sent (end of speech; the silence frames come after it); after last frame = "
             "the same − the last frame sent, silence included (negative: the VAD's final came while "
             "silence was still streaming). Quiet tail = "
             "the sentence audio's own trailing frames under −50 dBFS (Piper's). Final by = "
             "`speech_final` (VAD pause) or not (CloseStream). WER of the finals' transcripts joined.", "",
             "| sentence | audio s | quiet tail s | + silence s | first interim s | final s | after last "
             "frame s | final by | interims | finals | WER |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r.sentence} | {r.audio_s:.2f} | {r.quiet_tail_s:.2f} | {r.trailing_silence_s:g} | "
                     f"{fmt(r.first_interim_s, 2)} | **{fmt(r.final_s, 2)}** | {fmt(r.after_last_frame_s, 2)} | "
                     f"{r.final_by or '–'} | "
                     f"{r.interims} | {r.finals} | {'–' if r.wer is None else f'{r.wer:.1%}'} |")
    lines.append("")
    for silence_s in sorted({r.trailing_silence_s for r in runs}):
        group = [r for r in runs if r.trailing_silence_s == silence_s]
        wers = [r.wer for r in group]
        lines.append(f"- + {silence_s:g} s silence, median of {len(group)}: first interim "
                     f"{fmt(median_of([r.first_interim_s for r in group]), 2)} s, final "
                     f"**{fmt(median_of([r.final_s for r in group]), 2)} s** after the end of speech, "
                     f"WER {'–' if median_of(wers) is None else f'{median_of(wers):.1%}'}")
    for r in runs:
        for failure in r.failures:
            lines.append(f"- sentence {r.sentence} + {r.trailing_silence_s:g} s: FAILED: {failure}")
    lines += ["", "<details><summary>Live transcripts</summary>", ""]
    lines += [f"- {r.sentence} + {r.trailing_silence_s:g} s: {r.text}" for r in runs if r.text]
    lines += ["", "</details>"]
    return lines


# ---------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(WHISPER_ROUTES),
                   help="Whisper models, comma-separated, of " + ", ".join(WHISPER_ROUTES))
    p.add_argument("--compute-types", default="float32,int8", help="faster-whisper compute types")
    p.add_argument("--runs", type=int, default=3, help="timed transcriptions per engine (after one warm-up)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="faster-whisper's cpu_threads (default: every core, as Kiln uses)")
    p.add_argument("--long-minutes", type=float, default=10.0,
                   help="length of the long recording in minutes (at least; 0: no long recording)")
    p.add_argument("--long-runs", type=int, default=1, help="timed transcriptions of the long recording")
    p.add_argument("--ws-sentences", type=int, default=3,
                   help="sentences streamed over nova-3's WebSocket, each twice (0: none)")
    p.add_argument("--ws-model", help="the model that serves @cf/deepgram/nova-3 (default: the first of --models)")
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
    args.ws_model = args.ws_model or args.models[0]
    if args.ws_model not in args.models:
        p.error(f"--ws-model {args.ws_model!r} must be one of --models (loaded before the live runs)")
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
    # Room for the long recording: its WAV as one body, its length, its transcription time.
    long_max_s = args.long_minutes * 60 + 60
    config = work / "kiln.toml"
    config.write_text(f'[aliases]\n"@cf/deepgram/nova-3" = "{args.ws_model}"\n\n'
                      f"[limits.audio]\nmax_seconds = {max(1800.0, long_max_s + 60):.0f}.0\n")
    port = free_port()
    # Only the small embedding model loads at start (the speech models load on first request).
    argv = [args.kiln_bin, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir),
            "--models", "all-minilm-l6-v2", "--offline", "--config", str(config),
            "--max-body-bytes", str(max(16 << 20, int(long_max_s * SAMPLE_RATE * 2) + (1 << 20))),
            "--request-timeout-secs", str(int(request_timeout_s(long_max_s)))]
    kiln = Server("kiln", argv, port, "/health", args.log_dir / "speech-kiln.log", STARTUP_TIMEOUT_S)
    print(f"bench: starting Kiln: {kiln.command}", file=sys.stderr)
    kiln.start()

    failures: list[str] = []
    syntheses: list[Synthesis] = []
    long_syntheses: list[Synthesis] = []
    args.tts_warmup_s = None
    try:
        args.tts_warmup_s = tts(kiln.base, WARMUP_SENTENCE).wall_s
        for sentence in SENTENCES:
            s = tts(kiln.base, sentence)
            syntheses.append(s)
            print(f"bench: TTS {s.audio_s:.2f} s of audio in {s.wall_s:.3f} s (RTF {s.wall_s / s.audio_s:.3f})",
                  file=sys.stderr)
        if args.long_minutes > 0:
            long_syntheses = syntheses + [tts(kiln.base, sentence) for sentence in LONG_SENTENCES]
    except (RuntimeError, urllib.error.URLError, OSError, wave.Error) as error:
        kiln.stop()
        print(f"bench: TTS failed, so there is no test recording: {error}", file=sys.stderr)
        return 1

    short = make_recording(work / "recording.wav", "short", syntheses, args.runs, warm_up=True)
    print(f"bench: test recording {short.seconds:.1f} s: {short.path}", file=sys.stderr)
    long = None
    if long_syntheses:
        order = long_order(long_syntheses, args.long_minutes * 60)
        long = make_recording(work / "long.wav", "long", order, args.long_runs, warm_up=False)
        print(f"bench: long recording {long.seconds:.1f} s ({len(order)} sentences): {long.path}",
              file=sys.stderr)

    rows: list[Transcription] = []
    long_rows: list[Transcription] = []
    for model in args.models:
        rows.append(kiln_transcribe(kiln, model, short))
    if long:
        for model in args.models:
            long_rows.append(kiln_transcribe(kiln, model, long))
    live_runs = kiln_live(kiln, syntheses, args.ws_sentences)
    kiln.stop()

    if not args.skip_faster_whisper:
        for model in args.models:
            for compute in args.compute_types:
                short_row, *long_row = faster_whisper_transcribe(args, model, compute,
                                                                 [short, *([long] if long else [])])
                rows.append(short_row)
                long_rows += long_row
    rows.sort(key=lambda r: args.models.index(r.model))  # stable: Kiln first within a model
    long_rows.sort(key=lambda r: args.models.index(r.model))
    for r in rows + long_rows:
        for failure in r.failures:
            print(f"bench: {r.engine} {r.model} {r.compute}: FAILED: {failure}", file=sys.stderr)

    text = report(args, syntheses, short, rows, long, long_rows, live_runs, failures)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        print(f"bench: wrote {args.output}", file=sys.stderr)
    failed = failures or any(r.failures for r in rows + long_rows) or any(r.failures for r in live_runs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
