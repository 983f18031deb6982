#!/usr/bin/env python3
"""Kiln vs llama.cpp's llama-server vs llama-cpp-python, same GGUF, same threads.

Starts each server in turn on 127.0.0.1 (one at a time, so they never share the CPU), streams
the same chat requests at it (greedy, fixed max_tokens) and measures:

  * single-stream decode speed (tokens/s after the first token);
  * time to first token (TTFT) for ~200- and ~1,000-token prompts;
  * aggregate tokens/s and p50/p99 TTFT at 1, 4, 8 and 16 concurrent streams;
  * TTFT of a request sharing a ~1,000-token system prompt with the one before (prefix reuse).

Prints Kiln/peer ratios and writes a markdown report (default docs/benchmarks.md). Every loop is
bounded, every request has a timeout, and the servers it started are killed on exit.
Standard library only; if the `llama_cpp` module is importable (the bench venv has it), prompts
are sized with the model's own tokenizer, otherwise by a words-per-token estimate.
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import os
import shlex
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

BENCHES_DIR = Path(__file__).resolve().parent
if str(BENCHES_DIR) not in sys.path:  # bench_common lives beside this script, however it is run
    sys.path.insert(0, str(BENCHES_DIR))

from bench_common import (  # noqa: E402
    CACHE_DIR, DEFAULT_LOG_DIR, Server, default_kiln_bin, free_port, load_average,
    machine_description, stop_servers_on_exit,
)

REPO_ROOT = BENCHES_DIR.parent
DEFAULT_DATA_DIR = CACHE_DIR / "data"
# kiln-reproducible: Kiln with --reproducible (issue #17), to measure what that setting costs.
SERVERS = ("kiln", "llama-server", "llama-cpp-python", "kiln-reproducible")
STARTUP_TIMEOUT_S = 600
# The heading of this harness's section in --output; the rest of that file is left as it is.
LLM_SECTION = "## LLM serving: Kiln vs llama.cpp"
REQUEST_TIMEOUT_S = 600

# Plain, common words: they tokenize to about one token each with BPE vocabularies.
WORDS = (
    "the river town market bread morning light window garden stone bridge winter summer road "
    "music letter friend school table paper water field forest house night story money train "
    "station doctor kitchen weather mountain village teacher answer question reason number "
    "history people family evening animal picture problem office language company moment"
).split()


@dataclass
class StreamResult:
    ok: bool
    ttft_s: float = 0.0
    total_s: float = 0.0
    tokens: int = 0
    decode_s: float = 0.0  # first token to last token
    error: str = ""


@dataclass
class ServerResults:
    name: str
    command: str = ""
    metrics: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Prompts


class PromptMaker:
    """Deterministic filler text of a given token length, measured with the model's tokenizer
    when `llama_cpp` is available."""

    def __init__(self, gguf: Path):
        self.tokenize = None
        try:
            from llama_cpp import Llama  # type: ignore

            vocab = Llama(model_path=str(gguf), vocab_only=True, verbose=False)
            self.tokenize = lambda text: len(vocab.tokenize(text.encode(), add_bos=False))
        except Exception as error:  # noqa: BLE001 - any failure means "estimate instead"
            print(f"bench: sizing prompts by estimate ({error.__class__.__name__})", file=sys.stderr)

    def filler(self, tokens: int, seed: int) -> str:
        words = [WORDS[(seed * 7919 + i * 104729 + i * i) % len(WORDS)] for i in range(tokens * 2)]
        if self.tokenize is None:
            return " ".join(words[: int(tokens * 0.8)])
        low, high = 1, len(words)
        while low < high:  # the longest prefix that fits in `tokens`
            mid = (low + high + 1) // 2
            if self.tokenize(" ".join(words[:mid])) <= tokens:
                low = mid
            else:
                high = mid - 1
        return " ".join(words[:low])


# ---------------------------------------------------------------------------------------------
# Servers


def kiln_server(args, model: str, gguf: Path, port: int, reproducible: bool = False) -> tuple[Server, "Client"]:
    argv = [
        args.kiln_bin, "serve", "--listen", f"127.0.0.1:{port}", "--models", model,
        "--threads", str(args.threads), "--data-dir", str(args.data_dir),
        "--context-size", str(args.ctx_per_slot), "--offline",
    ]
    if kiln_has_flag(args.kiln_bin, "--parallel"):
        argv += ["--parallel", str(args.parallel)]
    name = "kiln-reproducible" if reproducible else "kiln"
    if reproducible:
        argv.append("--reproducible")
    server = Server(name, argv, port, "/health", args.log_dir / f"{name}.log", STARTUP_TIMEOUT_S)
    if args.kiln_api == "openai":
        return server, OpenAIClient(server, model, extra={})
    return server, KilnNativeClient(server, model)


def llama_server(args, model: str, gguf: Path, port: int) -> tuple[Server, "Client"]:
    argv = [
        args.llama_server_bin, "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port),
        "-t", str(args.threads), "-tb", str(args.threads), "-c", str(args.ctx_per_slot * args.parallel),
        "--parallel", str(args.parallel), "-cb", "-ngl", "0", "--no-webui",
    ]
    server = Server("llama-server", argv, port, "/health", args.log_dir / "llama-server.log",
                    STARTUP_TIMEOUT_S)
    extra = {"stream_options": {"include_usage": True}, "cache_prompt": True}
    if args.ignore_eos:
        extra["ignore_eos"] = True
    return server, OpenAIClient(server, model, extra=extra)


def llama_cpp_python(args, model: str, gguf: Path, port: int) -> tuple[Server, "Client"]:
    argv = [
        args.python, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
        "--port", str(port), "--n_threads", str(args.threads), "--n_threads_batch", str(args.threads),
        "--n_ctx", str(args.ctx_per_slot), "--n_gpu_layers", "0",
        # Its default cancels the running stream when another request arrives; queue instead.
        "--interrupt_requests", "False",
    ]
    server = Server("llama-cpp-python", argv, port, "/v1/models", args.log_dir / "llama-cpp-python.log",
                    STARTUP_TIMEOUT_S)
    return server, OpenAIClient(server, model, extra={})


def kiln_has_flag(kiln_bin: str, flag: str) -> bool:
    try:
        help_text = subprocess.run(
            [kiln_bin, "serve", "--help"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return flag in help_text


# ---------------------------------------------------------------------------------------------
# Streaming clients


class Client:
    def __init__(self, server: Server, model: str):
        self.server, self.model = server, model

    def request(self, messages: list[dict], max_tokens: int) -> tuple[str, dict]:
        raise NotImplementedError

    def piece_and_usage(self, event: dict) -> tuple[str, dict | None]:
        raise NotImplementedError

    def stream(self, messages: list[dict], max_tokens: int) -> StreamResult:
        path, body = self.request(messages, max_tokens)
        data = json.dumps(body).encode()
        request = urllib.request.Request(
            self.server.base + path, data=data, method="POST",
            headers={"content-type": "application/json", "accept": "text/event-stream"},
        )
        started = time.perf_counter()
        first = last = None
        pieces = 0
        usage_tokens = None
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
                for raw in response:
                    line = raw.decode("utf-8", "replace").strip()
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        break
                    event = json.loads(payload)
                    if "error" in event or event.get("errors"):
                        return StreamResult(ok=False, error=json.dumps(event)[:300])
                    piece, usage = self.piece_and_usage(event)
                    if usage and usage.get("completion_tokens") is not None:
                        usage_tokens = int(usage["completion_tokens"])
                    if piece:
                        now = time.perf_counter()
                        first = first or now
                        last = now
                        pieces += 1
        except (urllib.error.URLError, OSError, ValueError) as error:
            return StreamResult(ok=False, error=f"{error.__class__.__name__}: {error}"[:300])
        ended = time.perf_counter()
        if first is None:
            return StreamResult(ok=False, total_s=ended - started, error="no tokens streamed")
        return StreamResult(
            ok=True, ttft_s=first - started, total_s=ended - started,
            tokens=usage_tokens if usage_tokens else pieces, decode_s=(last or first) - first,
        )


class KilnNativeClient(Client):
    """Workers AI REST: `data: {"response": piece}` events, then a usage trailer."""

    def request(self, messages, max_tokens):
        path = f"/client/v4/accounts/bench/ai/run/{self.model}"
        return path, {"messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True}

    def piece_and_usage(self, event):
        return event.get("response") or "", event.get("usage")


class OpenAIClient(Client):
    """`/v1/chat/completions` with `stream: true`; `extra` carries server-specific fields."""

    def __init__(self, server: Server, model: str, extra: dict):
        super().__init__(server, model)
        self.extra = extra

    def request(self, messages, max_tokens):
        body = {
            "model": self.model, "messages": messages, "max_tokens": max_tokens,
            "temperature": 0, "stream": True, **self.extra,
        }
        return "/v1/chat/completions", body

    def piece_and_usage(self, event):
        choices = event.get("choices") or [{}]
        piece = (choices[0].get("delta") or {}).get("content") or ""
        return piece, event.get("usage")


# ---------------------------------------------------------------------------------------------
# Scenarios


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def story_prompt(tag: str) -> list[dict]:
    return user(f"[{tag}] Write a long, detailed story about a lighthouse keeper and a storm. "
                "Describe every hour of the night.")


def run_scenarios(client: Client, prompts: PromptMaker, plan: dict, results: ServerResults, seed_base: int) -> None:
    m = results.metrics
    failures: list[str] = []

    def once(messages, max_tokens) -> StreamResult:
        result = client.stream(messages, max_tokens)
        if not result.ok:
            failures.append(result.error)
        return result

    once(user("Say hello."), 8)  # warm-up: first-request costs are not what we measure

    # Single-stream decode speed: the median over a few runs of tokens after the first / time.
    rates = []
    tokens = []
    for i in range(plan["decode_runs"]):
        r = once(story_prompt(f"decode-{seed_base}-{i}"), plan["decode_tokens"])
        if r.ok and r.tokens > 1 and r.decode_s > 0:
            rates.append((r.tokens - 1) / r.decode_s)
            tokens.append(r.tokens)
    m["decode_tok_s"] = statistics.median(rates) if rates else None
    m["decode_tokens"] = statistics.median(tokens) if tokens else None

    # Cold TTFT: a unique tag at the very start defeats any prompt cache.
    for size in (200, 1000):
        ttfts = []
        for i in range(plan["ttft_runs"]):
            text = prompts.filler(size, seed_base * 1000 + size + i)
            r = once(user(f"[ttft-{seed_base}-{size}-{i}] {text}\n\nSummarize the text above."), 4)
            if r.ok:
                ttfts.append(r.ttft_s)
        m[f"ttft_{size}_s"] = statistics.median(ttfts) if ttfts else None

    # Shared 1,000-token system prompt: the second request can reuse the first one's prefix.
    system = f"[shared-{seed_base}] " + prompts.filler(1000, seed_base * 31 + 7)
    cold = once([{"role": "system", "content": system}, *user("Name the first word.")], 4)
    warm = once([{"role": "system", "content": system}, *user("Name the last word.")], 4)
    m["shared_cold_ttft_s"] = cold.ttft_s if cold.ok else None
    m["shared_warm_ttft_s"] = warm.ttft_s if warm.ok else None

    # Concurrency: each of N streams sends `rounds` requests back to back.
    for streams in plan["concurrency"]:
        outcomes: list[StreamResult] = []
        lock = threading.Lock()

        def worker(worker_id: int) -> None:
            for round_index in range(plan["rounds"]):
                r = once(story_prompt(f"c{streams}-{seed_base}-{worker_id}-{round_index}"), plan["concurrent_tokens"])
                with lock:
                    outcomes.append(r)

        threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(streams)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=REQUEST_TIMEOUT_S * plan["rounds"])
        wall = time.perf_counter() - started
        ok = [r for r in outcomes if r.ok]
        ttfts = [r.ttft_s for r in ok]
        m[f"c{streams}_tok_s"] = sum(r.tokens for r in ok) / wall if ok else None
        m[f"c{streams}_ttft_p50_s"] = percentile(ttfts, 0.5) if ttfts else None
        m[f"c{streams}_ttft_p99_s"] = percentile(ttfts, 0.99) if ttfts else None
        m[f"c{streams}_failed"] = len(outcomes) - len(ok) + (streams * plan["rounds"] - len(outcomes))

    if failures:
        results.notes.append(f"{len(failures)} failed request(s), first: {failures[0]}")


# ---------------------------------------------------------------------------------------------
# Report


def rows_for(plan: dict) -> list[tuple[str, str]]:
    """(metric key, row label)."""
    rows = [
        ("decode_tok_s", "Single-stream decode (tok/s)"),
        ("ttft_200_s", "TTFT, 200-token prompt (s)"),
        ("ttft_1000_s", "TTFT, 1,000-token prompt (s)"),
        ("shared_cold_ttft_s", "TTFT, 1,000-token system prompt, first request (s)"),
        ("shared_warm_ttft_s", "TTFT, same system prompt, second request (s)"),
    ]
    for c in plan["concurrency"]:
        rows += [
            (f"c{c}_tok_s", f"{streams(c)}: aggregate tok/s"),
            (f"c{c}_ttft_p50_s", f"{streams(c)}: TTFT p50 (s)"),
            (f"c{c}_ttft_p99_s", f"{streams(c)}: TTFT p99 (s)"),
        ]
    return rows


def streams(count: int) -> str:
    return f"{count} stream" + ("s" if count != 1 else "")


def fmt(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def ratio(kiln, peer) -> str:
    if not kiln or not peer:
        return "n/a"
    return f"{kiln / peer:.2f}×"


def report_table(model: str, gguf: Path, results: dict[str, ServerResults], plan: dict) -> str:
    names = [n for n in SERVERS if n in results]
    peers = [n for n in names if n != "kiln"]
    header = ["Metric", *names] + ([f"Kiln / {p}" for p in peers] if "kiln" in results else [])
    lines = [f"### {model} (`{gguf.name}`)", "", "| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]
    for key, label in rows_for(plan):
        cells = [label] + [fmt(results[n].metrics.get(key)) for n in names]
        if "kiln" in results:
            cells += [ratio(results["kiln"].metrics.get(key), results[p].metrics.get(key)) for p in peers]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for name in names:
        extra = [f"{streams(c)}: {results[name].metrics.get(f'c{c}_failed', 0)} failed" for c in plan["concurrency"]
                 if results[name].metrics.get(f"c{c}_failed")]
        for note in results[name].notes + extra:
            lines.append(f"- {name}: {note}")
    lines.append("")
    return "\n".join(lines)


def write_report(path: Path, args, plan: dict, tables: list[str], commands: list[str]) -> None:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mode = "quick (smoke) run" if args.quick else "full run"
    header = [
        LLM_SECTION,
        "",
        f"Generated by `benches/llm_bench.py` on {now} ({mode}).",
        "",
        f"- Command: `{args.command_line}`",
        f"- Machine: {machine_description()}; every server got `{args.threads}` threads and ran alone.",
        f"- Load average (1/5/15 min) at start: {args.load_at_start}; at end: {load_average()}.",
        f"- Workload: greedy chat requests, streamed; decode {plan['decode_tokens']} tokens × "
        f"{plan['decode_runs']}; TTFT median of {plan['ttft_runs']}; concurrency "
        f"{', '.join(map(str, plan['concurrency']))} streams × {plan['rounds']} request(s) of "
        f"{plan['concurrent_tokens']} tokens; {args.parallel} parallel slots of {args.ctx_per_slot} tokens.",
        "- Ratios are Kiln / peer: above 1 is better for tok/s, below 1 is better for TTFT.",
        "- Tokens are what each server reports (usage) or, failing that, streamed pieces; "
        + ("llama-server ignores EOS, the others stop at EOS (greedy output is the same model's)."
           if args.ignore_eos else "every server stops at EOS."),
        "",
    ]
    if args.note:
        header += [f"> {args.note}", ""]
    server_lines = ["Server commands:", ""] + [f"- `{c}`" for c in commands] + [""]
    report = "\n".join(header + tables + server_lines)
    # docs/benchmarks.md holds the other harnesses' results too: replace only this section.
    text = path.read_text() if path.exists() else ""
    if LLM_SECTION in text:
        start = text.index(LLM_SECTION)
        end = text.find("\n## ", start + len(LLM_SECTION))
        report = text[:start] + report + ("" if end == -1 else "\n" + text[end + 1:])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report)


# ---------------------------------------------------------------------------------------------


def save_kiln_metrics(server: Server, path: Path) -> None:
    """Kiln's own view of the run (TTFT, queue time, batch sizes), kept next to the logs."""
    try:
        with urllib.request.urlopen(server.base + "/metrics", timeout=30) as response:
            path.write_bytes(response.read())
    except (urllib.error.URLError, OSError) as error:
        print(f"bench: could not save Kiln's /metrics: {error}", file=sys.stderr)


def find_gguf(data_dir: Path, model: str) -> Path:
    matches = sorted(glob.glob(str(data_dir / "models" / model / "*.gguf")))
    if not matches:
        raise SystemExit(f"no GGUF for {model} under {data_dir}/models; run `kiln models pull {model}`")
    return Path(matches[0])


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="smollm2-135m-instruct,qwen2.5-coder-0.5b-instruct",
                   help="Kiln model names, comma-separated; their GGUF files are used for the peers")
    p.add_argument("--servers", default="kiln,llama-server,llama-cpp-python",
                   help=f"which servers to run, comma-separated, of: {', '.join(SERVERS)}")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--parallel", type=int, default=16, help="slots for servers that batch")
    p.add_argument("--ctx-per-slot", type=int, default=2048)
    p.add_argument("--quick", action="store_true", help="fewer, shorter requests: a smoke test")
    p.add_argument("--concurrency", default="1,4,8,16")
    p.add_argument("--kiln-api", choices=("native", "openai"), default="native")
    p.add_argument("--no-ignore-eos", dest="ignore_eos", action="store_false",
                   help="do not ask llama-server to ignore EOS")
    p.add_argument("--kiln-bin", default=default_kiln_bin())
    p.add_argument("--llama-server-bin", default="llama-server")
    p.add_argument("--python", default=sys.executable, help="python with llama_cpp.server installed")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--log-dir", type=Path, default=DEFAULT_LOG_DIR)
    p.add_argument("--output", type=Path, default=REPO_ROOT / "docs" / "benchmarks.md")
    p.add_argument("--note", default="", help="a line quoted at the top of the report")
    args = p.parse_args()
    args.command_line = " ".join(shlex.quote(a) for a in [os.environ.get("KILN_BENCH_COMMAND", sys.argv[0]), *sys.argv[1:]])
    return args


def main() -> int:
    args = parse_args()
    args.load_at_start = load_average()
    args.log_dir.mkdir(parents=True, exist_ok=True)
    stop_servers_on_exit()
    concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    plan = (
        {"decode_runs": 1, "decode_tokens": 64, "ttft_runs": 1, "rounds": 1, "concurrent_tokens": 32}
        if args.quick else
        {"decode_runs": 3, "decode_tokens": 256, "ttft_runs": 3, "rounds": 3, "concurrent_tokens": 128}
    )
    plan["concurrency"] = concurrency
    starters = {
        "kiln": kiln_server, "llama-server": llama_server, "llama-cpp-python": llama_cpp_python,
        "kiln-reproducible": lambda *a: kiln_server(*a, reproducible=True),
    }
    chosen = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = set(chosen) - set(SERVERS)
    if unknown:
        raise SystemExit(f"unknown servers: {', '.join(sorted(unknown))}")

    tables, commands = [], []
    for model_index, model in enumerate(m.strip() for m in args.models.split(",") if m.strip()):
        gguf = find_gguf(args.data_dir, model)
        prompts = PromptMaker(gguf)
        results: dict[str, ServerResults] = {}
        for name in (n for n in SERVERS if n in chosen):
            server, client = starters[name](args, model, gguf, free_port())
            commands.append(server.command)
            print(f"bench: {model} on {name}: starting", file=sys.stderr)
            outcome = ServerResults(name=name, command=commands[-1])
            try:
                server.start()
                # Same prompts for every server; each starts fresh, so none inherits a cache.
                run_scenarios(client, prompts, plan, outcome, seed_base=model_index + 1)
                if name == "kiln":
                    save_kiln_metrics(server, args.log_dir / f"kiln-metrics-{model}.txt")
            except RuntimeError as error:
                outcome.notes.append(str(error))
            finally:
                server.stop()
            results[name] = outcome
            print(f"bench: {model} on {name}: {json.dumps(outcome.metrics)}", file=sys.stderr)
        table = report_table(model, gguf, results, plan)
        print(table)
        tables.append(table)
    write_report(args.output, args, plan, tables, commands)
    print(f"bench: wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
