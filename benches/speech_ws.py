"""Live transcription latency for speech_bench.py: one sentence streamed to Kiln's
`@cf/deepgram/nova-3` WebSocket at real-time pace, with Deepgram's `Results` messages timed.

The session (docs/speech.md, "Live transcription"; crates/kiln-http/src/media/live_session.rs):
`GET /client/v4/accounts/{account}/ai/run/@cf/deepgram/nova-3?encoding=linear16&sample_rate=16000
&interim_results=true&punctuate=true` upgraded to a WebSocket; binary messages of 16 kHz mono
16-bit PCM in; `{"type": "Results", "is_final", "speech_final", "from_finalize", "channel":
{"alternatives": [{"transcript"}]}}` out. Kiln's energy VAD ends an utterance after 500 ms of
non-speech (`speech_final: true`, Nova's end of turn); the text message `{"type": "CloseStream"}`
finalizes what is left (`from_finalize: true`), then Kiln sends `Metadata` and closes (1000).
Interims come every second of new speech, and are dropped while newer work waits.

Uses the `websockets` package's synchronous client (`scripts/bench speech` installs it): this
thread sends the frames, a second one receives and stamps every message as it arrives.
"""

from __future__ import annotations

import json
import math
import statistics
import threading
import time
from array import array
from dataclasses import dataclass, field

SAMPLE_RATE = 16_000
FRAME_S = 0.1
FRAME_BYTES = int(SAMPLE_RATE * FRAME_S) * 2
QUIET_DBFS = -50.0  # Kiln's VAD never calls audio below this speech (kiln_core::vad)
SESSION_TIMEOUT_S = 300
QUERY = "encoding=linear16&sample_rate=16000&interim_results=true&punctuate=true"


@dataclass
class LiveRun:
    sentence: int
    trailing_silence_s: float
    audio_s: float               # the sentence's audio (without the added silence)
    quiet_tail_s: float          # near-silence (< −50 dBFS) already at the end of the sentence audio
    first_interim_s: float | None = None    # first interim Results − first frame sent
    final_s: float | None = None            # last final Results − last sentence frame sent
    after_last_frame_s: float | None = None  # last final Results − last frame sent (silence too)
    final_by: str = ""                       # "VAD pause" (speech_final) or "CloseStream"
    finals: int = 0
    interims: int = 0
    text: str = ""
    wer: float | None = None
    served: str = ""
    failures: list = field(default_factory=list)


def quiet_tail_s(pcm: bytes) -> float:
    """Seconds of 20 ms frames at the end of `pcm` quieter than QUIET_DBFS."""
    samples = array("h", pcm)
    frame = SAMPLE_RATE // 50
    quiet = 0
    for end in range(len(samples), frame - 1, -frame):
        chunk = samples[end - frame:end]
        rms = math.sqrt(sum(s * s for s in chunk) / frame)
        if rms > 32768 * 10 ** (QUIET_DBFS / 20):
            break
        quiet += 1
    return quiet * frame / SAMPLE_RATE


def stream_sentence(base_url: str, account: str, index: int, pcm: bytes, reference: str,
                    trailing_silence_s: float, word_error_rate) -> LiveRun:
    """Streams `pcm` (then `trailing_silence_s` of zeros) in 100 ms frames at real-time pace,
    sends CloseStream right after the last frame and reads messages until Kiln closes."""
    run = LiveRun(index, trailing_silence_s, len(pcm) / 2 / SAMPLE_RATE, quiet_tail_s(pcm))
    speech = [pcm[i:i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]
    silence = [b"\0" * FRAME_BYTES] * round(trailing_silence_s / FRAME_S)
    url = base_url.replace("http://", "ws://", 1) + \
        f"/client/v4/accounts/{account}/ai/run/@cf/deepgram/nova-3?{QUERY}"
    received: list[tuple[float, dict]] = []
    try:
        from websockets.exceptions import ConnectionClosed
        from websockets.sync.client import connect

        ws = connect(url, compression=None, proxy=None, open_timeout=60, max_size=None)
    except Exception as error:  # noqa: BLE001 - reported, the run goes on
        run.failures.append(f"{type(error).__name__}: {error}")
        return run

    def receive() -> None:
        try:
            while True:
                message = ws.recv(timeout=SESSION_TIMEOUT_S)
                received.append((time.perf_counter(), json.loads(message)))
        except (ConnectionClosed, TimeoutError, ValueError):
            pass

    reader = threading.Thread(target=receive, daemon=True)
    reader.start()
    started = time.perf_counter()
    speech_end = last_frame = started
    with ws:
        try:
            for i, frame in enumerate(speech + silence):
                ws.send(frame)
                last_frame = time.perf_counter()
                if i == len(speech) - 1:
                    speech_end = last_frame
                time.sleep(max(0.0, started + FRAME_S * (i + 1) - time.perf_counter()))
            ws.send(json.dumps({"type": "CloseStream"}))
        except (ConnectionClosed, OSError) as error:
            run.failures.append(f"sending: {type(error).__name__}: {error}")
        reader.join(SESSION_TIMEOUT_S)
    summarize(run, received, started, speech_end, last_frame, reference, word_error_rate)
    return run


def summarize(run: LiveRun, received: list[tuple[float, dict]], started: float, speech_end: float,
              last_frame: float, reference: str, word_error_rate) -> None:
    results = [(at, m) for at, m in received if m.get("type") == "Results"]
    interims = [at for at, m in results if not m.get("is_final")]
    finals = [(at, m) for at, m in results if m.get("is_final")]
    run.failures += [m.get("description", str(m)) for _, m in received if m.get("type") == "Error"]
    run.interims, run.finals = len(interims), len(finals)
    if interims:
        run.first_interim_s = interims[0] - started
    if not finals:
        run.failures.append(f"no final Results in {len(received)} messages")
        return
    final_at, last = finals[-1]
    run.final_s = final_at - speech_end
    run.after_last_frame_s = final_at - last_frame
    run.final_by = "VAD pause" if last.get("speech_final") else "CloseStream"
    run.text = " ".join(m["channel"]["alternatives"][0]["transcript"] for _, m in finals).strip()
    run.wer = word_error_rate(reference, run.text)
    run.served = str(last.get("metadata", {}).get("model_info", {}).get("version", ""))


def median_of(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None
