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


def serve_peer(model_dir: str, port: int, threads: int) -> None:
    import torch
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
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


def run_model(args, model: str, commands: list[str]) -> dict:
    model_dir = args.data_dir / "models" / model
    if not model_dir.is_dir():
        raise SystemExit(f"{model} is not installed under {args.data_dir}; run `kiln models pull {model}`")
    CURRENT_MODEL[0] = model
    kiln_port, peer_port = free_port(), free_port()
    kiln = Server(
        "kiln", [args.kiln_bin, "serve", "--listen", f"127.0.0.1:{kiln_port}", "--models", model,
                 "--threads", str(args.threads), "--data-dir", str(args.data_dir), "--offline"],
        kiln_port, "/health", args.log_dir / f"kiln-{model}.log", STARTUP_TIMEOUT_S,
        env={"KILN_AUTH": "open", "KILN_RATE_LIMITS": "false"},
    )
    peer = Server(
        "sentence-transformers",
        [args.python, str(Path(__file__).resolve()), "--serve-peer", str(model_dir), "--port", str(peer_port),
         "--threads", str(args.threads)],
        peer_port, "/", args.log_dir / f"sentence-transformers-{model}.log", STARTUP_TIMEOUT_S,
    )
    kiln_url = f"{kiln.base}/v1/embeddings"
    peer_url = peer.base + "/v1/embeddings"
    results = {}
    for server in (kiln, peer):
        server.start()
        commands.append(server.command)
    probe = sentences(8, seed=4242)
    agreement = min(cosine(a, b) for a, b in zip(post(kiln_url, probe), post(peer_url, probe)))
    print(f"{model}: lowest cosine between Kiln's and sentence-transformers' vectors: {agreement:.6f}")
    for name, server, url in (("kiln", kiln, kiln_url), ("sentence-transformers", peer, peer_url)):
        results[name] = measure(name, url, args)
    for server in (kiln, peer):
        server.stop()
    return {"agreement": agreement, **results}


def peer_versions(python: str) -> str:
    """sentence-transformers, PyTorch and transformers as the peer's Python has them."""
    import subprocess
    probe = ("import sentence_transformers as s, torch, transformers as t; "
             "print(f'sentence-transformers {s.__version__}, torch {torch.__version__}, "
             "transformers {t.__version__}')")
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
        f"model store ({peer_versions(args.python)}).",
        "",
        "| model | server | " + " | ".join(f"batch {b}" for b in BATCHES) + f" | {CLIENTS} clients |",
        "|---|---|" + "---:|" * (len(BATCHES) + 1),
    ]
    for model, results in all_results.items():
        for name in ("kiln", "sentence-transformers"):
            row = results[name]
            cells = [f"{row[b]:.1f}" for b in BATCHES] + [f"{row['clients']:.1f} ({row['p50_ms']:.0f} ms)"]
            lines.append(f"| {model} | {name} | " + " | ".join(cells) + " |")
        kiln, peer = results["kiln"], results["sentence-transformers"]
        ratios = [f"{kiln[b] / peer[b]:.2f}×" for b in BATCHES] + [f"{kiln['clients'] / peer['clients']:.2f}×"]
        lines.append(f"| {model} | **Kiln / peer** | " + " | ".join(ratios) + " |")
    lines += ["", "Vector agreement (lowest cosine over 8 sentences, Kiln vs sentence-transformers): "
              + ", ".join(f"{m} {r['agreement']:.6f}" for m, r in all_results.items()) + ".", "",
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
        serve_peer(args.serve_peer, args.port, args.threads)
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
