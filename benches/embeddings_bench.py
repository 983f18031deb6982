#!/usr/bin/env python3
"""Kiln's embeddings vs sentence-transformers (PyTorch, CPU) on the same model files.

Both run as HTTP servers on this machine, one measured at a time with the same thread count:

- Kiln: `kiln serve` (release build), OpenAI's `/v1/embeddings` (the native `/ai/run` route
  takes at most 100 texts, as Workers AI does; the 128-text row needs more).
- sentence-transformers: the same model directory Kiln's store holds, loaded with
  `SentenceTransformer(dir)` behind a small threaded HTTP server (below, `--serve-peer`) that
  encodes each request's texts in one `encode` call; sentence-transformers has no server of its
  own, and this is the one a user would write. (TEI, the peer with dynamic batching, is a Rust
  binary that cannot be installed offline here; Kiln's own dynamic batching is what the
  16-client row measures.)

MiniLM also runs as its int8 ONNX export (`all-minilm-l6-v2-int8`): in Kiln on ONNX Runtime and
in sentence-transformers' ONNX backend (optimum), so each precision is compared with the peer at
the same precision, and the int8 rows with the f32 peer a user would otherwise run.

Rows: sentences per second at 1, 8, 32 and 128 texts per request (one client, requests back to
back), and at 16 concurrent clients sending one text each. Before measuring, both servers embed
the same sentences and their vectors are compared (cosine), so the numbers are for the same
work. Results go to the "## Embeddings" section of docs/benchmarks.md (only that section is
replaced) with the command that produced them.

    scripts/bench embeddings                          # all-MiniLM-L6-v2 and EmbeddingGemma-300m
    scripts/bench embeddings --models all-minilm-l6-v2 --seconds 3   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import (  # noqa: E402
    CACHE_DIR, DEFAULT_LOG_DIR, REPO_DIR, Server, cpu_model, default_kiln_bin, free_port,
    kiln_revision, load_average, machine_description, stop_servers_on_exit,
)

SECTION = "## Embeddings"
STARTUP_TIMEOUT_S = 600
BATCHES = (1, 8, 32, 128)
CLIENTS = 16

MODELS = ("all-minilm-l6-v2", "embeddinggemma-300m")

# What runs for each model: Kiln's servers (label, local model) and the peer's (label, model
# directory, ONNX file or None for PyTorch). MiniLM also runs as the int8 ONNX export, in Kiln
# and in sentence-transformers' ONNX backend, so each precision has a peer at that precision.
KILN_VARIANTS = {
    "all-minilm-l6-v2": (("kiln", "all-minilm-l6-v2"), ("kiln int8", "all-minilm-l6-v2-int8")),
    "embeddinggemma-300m": (("kiln", "embeddinggemma-300m"),),
}
PEER_VARIANTS = {
    "all-minilm-l6-v2": (("sentence-transformers", "all-minilm-l6-v2", None),
                         ("sentence-transformers int8", "all-minilm-l6-v2-int8", "model.onnx")),
    "embeddinggemma-300m": (("sentence-transformers", "embeddinggemma-300m", None),),
}
# The ratios reported: (Kiln row, peer row).
RATIOS = (("kiln", "sentence-transformers"), ("kiln int8", "sentence-transformers"),
          ("kiln int8", "sentence-transformers int8"))

WORDS = (
    "kiln clay fire glaze potter wheel shelf cone heat slow cool crack vase bowl cup plate "
    "river mountain city market bread coffee tea garden winter summer morning evening light "
    "train road bridge tower museum library school music film story letter window door table "
    "quickly carefully often rarely under over beside through across after before while since "
    "builds carries finds keeps makes opens reads shows takes turns walks writes brings holds"
).split()


def sentences(count: int, seed: int = 0) -> list[str]:
    """Deterministic sentences of 8 to 24 words."""
    out = []
    for n in range(count):
        length = 8 + (n * 7 + seed) % 17
        words = [WORDS[(n * 31 + i * 17 + seed * 13 + i * i) % len(WORDS)] for i in range(length)]
        out.append(" ".join(words).capitalize() + ".")
    return out


# ---------------------------------------------------------------------------------------------
# The sentence-transformers server (this file, run with --serve-peer)


def serve_peer(model_dir: str, port: int, threads: int, onnx_file: str | None) -> None:
    import torch
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    if onnx_file:
        # sentence-transformers' ONNX backend (optimum + ONNX Runtime) on the same int8 file.
        model = SentenceTransformer(model_dir, device="cpu", backend="onnx", model_kwargs={
            "file_name": onnx_file, "provider": "CPUExecutionProvider"})
        session = model[0].auto_model.model
        print(f"peer: ONNX Runtime session on {onnx_file}: {session.get_providers()}", flush=True)
    else:
        model = SentenceTransformer(model_dir, device="cpu")
    # Kiln embeds `text` as a document (EmbeddingGemma's "document" prompt); so does the peer.
    prompt_name = "document" if "document" in (model.prompts or {}) else None

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            texts = body["input"]
            vectors = model.encode(texts, batch_size=max(1, len(texts)), normalize_embeddings=True,
                                   prompt_name=prompt_name)
            data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors.tolist())]
            answer = json.dumps({"object": "list", "data": data}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    class Server(ThreadingHTTPServer):
        request_queue_size = 128  # 16 clients connect at once; the default backlog is 5

    Server(("127.0.0.1", port), Handler).serve_forever()


# ---------------------------------------------------------------------------------------------
# Measuring


def post(url: str, texts: list[str], model: str = "") -> list[list[float]]:
    """An OpenAI embeddings request; both servers answer `{data: [{embedding}]}`."""
    body = json.dumps({"model": model or CURRENT_MODEL[0], "input": texts}).encode()
    request = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as response:
        return [item["embedding"] for item in json.loads(response.read())["data"]]


# The local model the requests name (Kiln serves it by name on /v1/embeddings).
CURRENT_MODEL = [""]


def sequential(url: str, batch: int, seconds: float) -> float:
    """Sentences per second, one client, `batch` texts per request, for about `seconds`."""
    post(url, sentences(batch, seed=999))  # warm-up
    done, round_ = 0, 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds or round_ < 3:
        post(url, sentences(batch, seed=round_))
        done += batch
        round_ += 1
    return done / (time.perf_counter() - started)


def concurrent(url: str, clients: int, seconds: float) -> tuple[float, float]:
    """Sentences per second and median latency (ms), `clients` clients sending one text each."""
    post(url, sentences(1, seed=998))
    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def client(index: int) -> int:
        sent, n = 0, 0
        while time.perf_counter() < stop_at:
            began = time.perf_counter()
            post(url, sentences(1, seed=index * 1000 + n))
            with lock:
                latencies.append(time.perf_counter() - began)
            sent += 1
            n += 1
        return sent

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        total = sum(pool.map(client, range(clients)))
    wall = time.perf_counter() - started
    return total / wall, statistics.median(latencies) * 1000 if latencies else float("nan")


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    norm = (sum(x * x for x in a) * sum(y * y for y in b)) ** 0.5
    return dot / norm if norm else 0.0


def measure(name: str, url: str, args) -> dict:
    row = {}
    for batch in BATCHES:
        row[batch] = sequential(url, batch, args.seconds)
        print(f"  {name}: batch {batch}: {row[batch]:.1f} sentences/s", flush=True)
    row["clients"], row["p50_ms"] = concurrent(url, CLIENTS, args.seconds)
    print(f"  {name}: {CLIENTS} clients: {row['clients']:.1f} sentences/s, p50 {row['p50_ms']:.0f} ms",
          flush=True)
    return row


# ---------------------------------------------------------------------------------------------


def kiln_server(args, model: str) -> Server:
    port = free_port()
    return Server(
        "kiln", [args.kiln_bin, "serve", "--listen", f"127.0.0.1:{port}", "--models", model,
                 "--threads", str(args.threads), "--data-dir", str(args.data_dir), "--offline"],
        port, "/health", args.log_dir / f"kiln-{model}.log", STARTUP_TIMEOUT_S,
        env={"KILN_AUTH": "open", "KILN_RATE_LIMITS": "false"},
    )


def peer_server(args, model_dir: Path, onnx_file: str | None) -> Server:
    port = free_port()
    command = [args.python, str(Path(__file__).resolve()), "--serve-peer", str(model_dir), "--port", str(port),
               "--threads", str(args.threads)]
    if onnx_file:
        command += ["--peer-onnx-file", onnx_file]
    return Server("sentence-transformers", command, port, "/",
                  args.log_dir / f"sentence-transformers-{model_dir.name}.log", STARTUP_TIMEOUT_S)


def installed_dir(args, model: str) -> Path:
    model_dir = args.data_dir / "models" / model
    if not model_dir.is_dir():
        raise SystemExit(f"{model} is not installed under {args.data_dir}; run `kiln models pull {model}`")
    return model_dir


def run_model(args, model: str, commands: list[str]) -> dict:
    """Every server of `model`, one at a time: agreement with the f32 peer first, then the rows.

    The f32 peer stays up while the others run, for the agreement probe; it is idle then."""
    probe = sentences(8, seed=4242)
    results, agreement = {}, {}
    (_, reference_model, _), *other_peers = PEER_VARIANTS[model]
    reference = peer_server(args, installed_dir(args, reference_model), None)
    reference.start()
    commands.append(reference.command)
    reference_url = reference.base + "/v1/embeddings"
    CURRENT_MODEL[0] = model
    reference_vectors = post(reference_url, probe)
    for name, local in KILN_VARIANTS[model]:
        installed_dir(args, local)
        CURRENT_MODEL[0] = local
        server = kiln_server(args, local)
        server.start()
        commands.append(server.command)
        url = f"{server.base}/v1/embeddings"
        agreement[name] = min(cosine(a, b) for a, b in zip(post(url, probe), reference_vectors))
        print(f"{model}: {name}: lowest cosine to sentence-transformers (f32): {agreement[name]:.6f}")
        results[name] = measure(name, url, args)
        server.stop()
    peer_name = PEER_VARIANTS[model][0][0]
    results[peer_name] = measure(peer_name, reference_url, args)
    reference.stop()
    for name, local, onnx_file in other_peers:
        server = peer_server(args, installed_dir(args, local), onnx_file)
        try:
            server.start()
        except Exception as error:  # optional peer: its backend may be missing
            print(f"{model}: {name} did not start ({error}); skipped", flush=True)
            continue
        commands.append(server.command)
        url = server.base + "/v1/embeddings"
        agreement[name] = min(cosine(a, b) for a, b in zip(post(url, probe), reference_vectors))
        print(f"{model}: {name}: lowest cosine to sentence-transformers (f32): {agreement[name]:.6f}")
        results[name] = measure(name, url, args)
        server.stop()
    return {"agreement": agreement, "rows": results}


def peer_versions(python: str) -> str:
    """sentence-transformers, PyTorch and transformers as the peer's Python has them."""
    import subprocess
    probe = ("import sentence_transformers as s, torch, transformers as t; "
             "print(f'sentence-transformers {s.__version__}, torch {torch.__version__}, "
             "transformers {t.__version__}', end='')\n"
             "try:\n import onnxruntime as o, importlib.metadata as m\n"
             " print(f', onnxruntime {o.__version__}, optimum {m.version(\"optimum\")}', end='')\n"
             "except ImportError:\n pass\nprint()")
    try:
        return subprocess.run([python, "-c", probe], capture_output=True, text=True,
                              timeout=120).stdout.strip() or "unknown versions"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown versions"


def report(args, all_results: dict, commands: list[str]) -> str:
    lines = [
        SECTION,
        "",
        f"`{args.command_line}` — {time.strftime('%Y-%m-%d')}, Kiln {kiln_revision()}, "
        f"{cpu_model()} ({machine_description()}), {args.threads} threads each, "
        f"load average before: {args.load_before}.",
        "",
        "Sentences per second (8–24 words each) through each server's HTTP API; one client sending "
        f"requests of N texts back to back, then {CLIENTS} clients sending one text each "
        "(median latency in brackets). sentence-transformers runs PyTorch on the CPU behind a "
        "minimal threaded HTTP server (in this harness); both load the same files from Kiln's "
        f"model store ({peer_versions(args.python)}). The int8 rows run all-MiniLM-L6-v2's "
        "int8 ONNX export (`all-minilm-l6-v2-int8`): Kiln on ONNX Runtime, "
        "sentence-transformers on its ONNX backend (optimum, ONNX Runtime).",
        "",
        "| model | server | " + " | ".join(f"batch {b}" for b in BATCHES) + f" | {CLIENTS} clients |",
        "|---|---|" + "---:|" * (len(BATCHES) + 1),
    ]
    for model, results in all_results.items():
        rows = results["rows"]
        for name, row in rows.items():
            cells = [f"{row[b]:.1f}" for b in BATCHES] + [f"{row['clients']:.1f} ({row['p50_ms']:.0f} ms)"]
            lines.append(f"| {model} | {name} | " + " | ".join(cells) + " |")
        for ours, theirs in RATIOS:
            if ours not in rows or theirs not in rows:
                continue
            kiln, peer = rows[ours], rows[theirs]
            ratios = [f"{kiln[b] / peer[b]:.2f}×" for b in BATCHES] + [f"{kiln['clients'] / peer['clients']:.2f}×"]
            lines.append(f"| {model} | **{ours} / {theirs}** | " + " | ".join(ratios) + " |")
    agreement = "; ".join(f"{model} {name} {value:.6f}" for model, results in all_results.items()
                          for name, value in results["agreement"].items())
    lines += ["", "Vector agreement (lowest cosine over 8 sentences to sentence-transformers' f32 "
              f"vectors): {agreement}.", "",
              "Server commands:", ""] + [f"- `{c}`" for c in commands] + [""]
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else ""
    if SECTION in text:
        start = text.index(SECTION)
        end = text.find("\n## ", start + len(SECTION))
        text = text[:start] + section + ("" if end == -1 else "\n" + text[end + 1:])
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--serve-peer", metavar="MODEL_DIR", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--peer-onnx-file", help=argparse.SUPPRESS)
    p.add_argument("--models", default=",".join(MODELS), help="local models (comma-separated)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    p.add_argument("--seconds", type=float, default=10.0, help="how long each row runs")
    p.add_argument("--kiln-bin", default=default_kiln_bin())
    p.add_argument("--python", default=sys.executable, help="the Python with sentence-transformers")
    p.add_argument("--data-dir", type=Path, default=CACHE_DIR / "data")
    p.add_argument("--log-dir", type=Path, default=DEFAULT_LOG_DIR)
    p.add_argument("--output", type=Path, default=REPO_DIR / "docs" / "benchmarks.md")
    args = p.parse_args()
    # KILN_BENCH_COMMAND is a command line already (`scripts/bench embeddings`): not quoted again.
    args.command_line = " ".join(
        [os.environ.get("KILN_BENCH_COMMAND", shlex.quote(sys.argv[0])), *map(shlex.quote, sys.argv[1:])])
    return args


def main() -> int:
    args = parse_args()
    if args.serve_peer:
        serve_peer(args.serve_peer, args.port, args.threads, args.peer_onnx_file)
        return 0
    stop_servers_on_exit()
    args.log_dir.mkdir(parents=True, exist_ok=True)
    args.load_before = load_average()
    commands: list[str] = []
    all_results = {}
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        if model not in MODELS:
            raise SystemExit(f"unknown model {model}: one of {', '.join(MODELS)}")
        print(f"{model}:", flush=True)
        all_results[model] = run_model(args, model, commands)
    section = report(args, all_results, commands)
    print(section)
    write_section(args.output, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
