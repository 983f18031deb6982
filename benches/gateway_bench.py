#!/usr/bin/env python3
"""Kiln's AI Gateway vs LiteLLM's proxy on the cache-HIT path: requests/s and p50/p99 latency.

Both gateways sit in front of the same Kiln (its OpenAI-compatible `/v1`) with their response
cache on; one identical chat request is sent until it is cached, then `wrk` (closed loop, fixed
connections, keep-alive) replays it on 127.0.0.1 and reports requests/s and the latency
distribution. Only cache hits are measured, so the model never runs during a measurement:

  * Kiln: `POST /v1/{account}/{gateway}/workers-ai/v1/chat/completions` through a gateway created
    with `cache_ttl` (and `collect_logs`, so each hit is logged as in production); a hit carries
    `cf-aig-cache-status: HIT`.
  * LiteLLM: `litellm --config` with one model routed to Kiln's `/v1` and
    `litellm_settings.cache` on (in-memory cache); a hit carries `x-litellm-cache-key`.

Cache hits are checked three ways: the response header before and after the run, and Kiln's
own generation counter (`/metrics`), which must not move during the run (a miss makes Kiln
generate). A failed check makes the exit status nonzero. The servers it started are killed on
exit. Standard library only; `wrk` must be on PATH (scripts/bench gateway installs it).
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

BENCHES_DIR = Path(__file__).resolve().parent
if str(BENCHES_DIR) not in sys.path:  # bench_common lives beside this script, however it is run
    sys.path.insert(0, str(BENCHES_DIR))

from bench_common import (  # noqa: E402
    CACHE_DIR, DEFAULT_LOG_DIR, Server, default_kiln_bin, free_port, load_average,
    machine_description, process_cpu_seconds, stop_servers_on_exit,
)

DEFAULT_MODELS_DIR = CACHE_DIR / "data" / "models"
STARTUP_TIMEOUT_S = 300
REQUEST_TIMEOUT_S = 120

ACCOUNT = "bench"
GATEWAY = "bench"
KILN_MODEL_ID = "@cf/meta/llama-3.1-8b-instruct"
LITELLM_MODEL = "smollm2"
MESSAGES = [{"role": "user", "content": "Say hi"}]
MAX_TOKENS = 8


@dataclass
class Result:
    name: str
    target: str = ""
    command: str = ""
    rps: float | None = None
    latency_ms: dict = field(default_factory=dict)  # "50%" -> ms
    requests: int = 0
    bytes_per_response: float | None = None
    server_cores: float | None = None  # average busy cores during the measured run
    wrk_cores: float | None = None
    generations_during_run: int | None = None
    # Gateway log writes Kiln dropped because its writer fell behind (requests were still
    # answered; their logs are missing).
    log_writes_dropped: int | None = None
    notes: list = field(default_factory=list)
    failures: list = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Processes


def pinned(argv: list[str], cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus, *argv] if cpus else argv


class ExternalServer:
    """A server this bench did not start (--kiln-url): found by its listening port, for CPU time."""

    def __init__(self, port: int):
        self.pid = pid_listening_on(port)

    def cpu_seconds(self) -> float | None:
        return None if self.pid is None else process_cpu_seconds(self.pid)


def pid_listening_on(port: int) -> int | None:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{cols[9]}]")
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            if any(os.readlink(fd) in inodes for fd in fd_dir.iterdir()):
                return int(fd_dir.parent.name)
        except OSError:
            continue
    return None


# ---------------------------------------------------------------------------------------------
# HTTP


def http(method: str, url: str, body: dict | None = None) -> tuple[int, dict, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def kiln_counter(kiln_base: str, name: str) -> int | None:
    """The sum of a Kiln Prometheus counter over its labels (0 when absent, None if unreadable)."""
    try:
        _, _, text = http("GET", kiln_base + "/metrics")
    except (urllib.error.URLError, OSError):
        return None
    total = 0
    for line in text.decode(errors="replace").splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def kiln_generations(kiln_base: str) -> int | None:
    """How many generations Kiln's engines have started (TTFT observations, all models)."""
    return kiln_counter(kiln_base, "kiln_time_to_first_token_seconds_count")


def kiln_log_writes_dropped(kiln_base: str) -> int | None:
    """Gateway log writes dropped so far, after the writer has caught up: listing logs flushes
    the writer first."""
    try:
        http("GET", f"{kiln_base}/client/v4/accounts/{ACCOUNT}/ai-gateway/gateways/{GATEWAY}/logs?per_page=1")
    except (urllib.error.URLError, OSError):
        return None
    return kiln_counter(kiln_base, "kiln_gateway_writes_dropped_total")


# ---------------------------------------------------------------------------------------------
# wrk


LATENCY_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
SIZE_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def wrk_script(path: Path, body: dict) -> Path:
    text = json.dumps(body, separators=(",", ":"))
    path.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = [==[{text}]==]\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    return path


def run_wrk(args, url: str, script: Path, duration: float) -> tuple[dict, float]:
    """Runs wrk and returns its parsed summary and the CPU seconds it used."""
    argv = pinned([args.wrk, f"-t{args.threads}", f"-c{args.connections}", f"-d{duration:g}s",
                   "--latency", "--timeout", "10s", "-s", str(script), url], args.wrk_cpus)
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"wrk exited with {process.returncode}: {output.strip()}")
    return parse_wrk(output), usage.ru_utime + usage.ru_stime


def parse_wrk(output: str) -> dict:
    parsed: dict = {"latency_ms": {}, "raw": output}
    for pct, value, unit in re.findall(r"^\s+(\d+(?:\.\d+)?%)\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.M):
        parsed["latency_ms"][pct] = float(value) * LATENCY_UNITS_MS[unit]
    if m := re.search(r"Requests/sec:\s+([\d.]+)", output):
        parsed["rps"] = float(m.group(1))
    if m := re.search(r"(\d+) requests in ([\d.]+)(\w+), ([\d.]+)(\w+) read", output):
        parsed["requests"] = int(m.group(1))
        parsed["bytes"] = float(m.group(4)) * SIZE_UNITS.get(m.group(5), 1)
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        parsed["non_2xx"] = int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output):
        parsed["socket_errors"] = sum(int(g) for g in m.groups())
    if "rps" not in parsed or "50%" not in parsed["latency_ms"] or "99%" not in parsed["latency_ms"]:
        raise RuntimeError(f"could not parse wrk's output:\n{output}")
    return parsed


def measure(args, result: Result, url: str, script: Path, server, kiln_base: str) -> None:
    """A warm-up run, then the measured run with Kiln's generation counter and CPU time around it."""
    if args.warmup > 0:
        run_wrk(args, url, script, args.warmup)
    generations_before = kiln_generations(kiln_base)
    dropped_before = kiln_log_writes_dropped(kiln_base)
    server_cpu_before = server.cpu_seconds() if server else None
    started = time.monotonic()
    summary, wrk_cpu = run_wrk(args, url, script, args.duration)
    wall = time.monotonic() - started
    server_cpu_after = server.cpu_seconds() if server else None
    generations_after = kiln_generations(kiln_base)
    dropped_after = kiln_log_writes_dropped(kiln_base)
    if dropped_before is not None and dropped_after is not None:
        result.log_writes_dropped = dropped_after - dropped_before

    result.rps = summary["rps"]
    result.latency_ms = summary["latency_ms"]
    result.requests = summary.get("requests", 0)
    if result.requests and "bytes" in summary:
        result.bytes_per_response = summary["bytes"] / result.requests
    result.wrk_cores = wrk_cpu / wall
    if server_cpu_before is not None and server_cpu_after is not None:
        result.server_cores = (server_cpu_after - server_cpu_before) / wall
    if summary.get("non_2xx"):
        result.failures.append(f"{summary['non_2xx']} non-2xx responses during the run")
    if summary.get("socket_errors"):
        result.notes.append(f"wrk socket errors: {summary['socket_errors']}")
    if generations_before is not None and generations_after is not None:
        result.generations_during_run = generations_after - generations_before
        if result.generations_during_run:
            result.failures.append(
                f"Kiln generated {result.generations_during_run} time(s) during the run: not all cache hits")
    else:
        result.notes.append("Kiln's /metrics not readable: generation counter not checked")
    print(f"bench: {result.name}: {summary['raw'].rstrip()}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# The two gateways


def kiln_gateway(args, kiln_base: str, kiln: Server | None, work: Path) -> Result:
    url = f"{kiln_base}/v1/{ACCOUNT}/{GATEWAY}/workers-ai/v1/chat/completions"
    result = Result("kiln", target=url, command=kiln.command if kiln else f"(already running at {kiln_base})")
    try:
        kiln_gateway_checks(args, result, kiln_base, kiln, work)
    except (RuntimeError, urllib.error.URLError, OSError) as error:
        result.failures.append(str(error))
    return result


def kiln_gateway_checks(args, result: Result, kiln_base: str, kiln: Server | None, work: Path) -> None:
    url = result.target
    status, _, body = http("POST", f"{kiln_base}/client/v4/accounts/{ACCOUNT}/ai-gateway/gateways",
                           {"id": GATEWAY, "cache_ttl": 3600, "collect_logs": True})
    if status not in (200, 201) and not (status == 409 or b"already" in body.lower()):
        raise RuntimeError(f"creating gateway {GATEWAY!r}: {status} {body[:300]!r}")
    request = {"model": KILN_MODEL_ID, "messages": MESSAGES, "max_tokens": MAX_TOKENS}

    def cache_status(when: str) -> str:
        status, headers, body = http("POST", url, request)
        if status != 200:
            raise RuntimeError(f"{when}: {status} {body[:300]!r}")
        return headers.get("cf-aig-cache-status", "(no cf-aig-cache-status header)")

    first = cache_status("first request")
    result.notes.append(f"first request: cf-aig-cache-status {first}")
    second = cache_status("second request")
    if second.upper() != "HIT":
        result.failures.append(f"second request not a cache hit: cf-aig-cache-status {second}")
        return
    target = kiln or ExternalServer(urllib.parse.urlsplit(kiln_base).port or 80)
    measure(args, result, url, wrk_script(work / "kiln.lua", request), target, kiln_base)
    after = cache_status("request after the run")
    if after.upper() != "HIT":
        result.failures.append(f"request after the run not a cache hit: cf-aig-cache-status {after}")


def litellm_proxy(args, kiln_base: str, work: Path) -> Result:
    config = work / "litellm.yaml"
    # JSON is YAML: no PyYAML needed here.
    config.write_text(json.dumps({
        "model_list": [{
            "model_name": LITELLM_MODEL,
            "litellm_params": {"model": f"openai/{args.model}", "api_base": f"{kiln_base}/v1",
                               "api_key": "none"},
        }],
        "litellm_settings": {"cache": True, "cache_params": {"type": "local"}},
    }, indent=2))
    port = free_port()
    argv = pinned([args.litellm_bin, "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
                   "--num_workers", str(args.litellm_workers), *shlex.split(args.litellm_args)],
                  args.server_cpus)
    env = {
        # Offline: the bundled model cost map instead of fetching it from GitHub.
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        # No master key (so no auth and no database), as Kiln's gateway runs unauthenticated here;
        # recent LiteLLM refuses to start without one unless told this is local.
        "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
        "LITELLM_TELEMETRY": "False",
        "DISABLE_SCHEMA_UPDATE": "True",
    }
    for name in ("DATABASE_URL", "LITELLM_MASTER_KEY", "REDIS_HOST", "REDIS_URL"):
        os.environ.pop(name, None)
    server = Server("litellm", argv, port, "/health/liveliness", args.log_dir / "gateway-litellm.log",
                    STARTUP_TIMEOUT_S, env=env, cwd=work)
    url = f"{server.base}/chat/completions"
    result = Result("litellm", target=url, command=server.command)
    print(f"bench: starting LiteLLM: {server.command}", file=sys.stderr)
    request = {"model": LITELLM_MODEL, "messages": MESSAGES, "max_tokens": MAX_TOKENS}
    try:
        started = time.monotonic()
        server.start()
        result.notes.append(f"LiteLLM {package_version('litellm')}, {args.litellm_workers} worker(s), "
                            f"ready {time.monotonic() - started:.1f}s after start")
        litellm_checks(args, result, kiln_base, work, server, url, request)
    except (RuntimeError, urllib.error.URLError, OSError) as error:
        result.failures.append(str(error))
    finally:
        server.stop()
    return result


def litellm_checks(args, result: Result, kiln_base: str, work: Path, server: Server, url: str,
                   request: dict) -> None:
    def cache_key(when: str) -> str | None:
        status, headers, body = http("POST", url, request)
        if status != 200:
            raise RuntimeError(f"{when}: {status} {body[:300]!r}")
        return headers.get("x-litellm-cache-key")

    cache_key("first request")
    # Each worker process has its own in-memory cache, and a new connection may reach any worker:
    # ask until several requests in a row are hits (wrk's warm-up run reaches the rest).
    wanted, in_a_row = 2 * args.litellm_workers, 0
    for _ in range(16 * args.litellm_workers):
        in_a_row = in_a_row + 1 if cache_key("warm-up request") is not None else 0
        if in_a_row >= wanted:
            break
    if in_a_row < wanted:
        result.failures.append("warm-up requests not cache hits: no x-litellm-cache-key header")
        return
    measure(args, result, url, wrk_script(work / "litellm.lua", request), server, kiln_base)
    if cache_key("request after the run") is None:
        result.failures.append("request after the run not a cache hit: no x-litellm-cache-key header")


def package_version(name: str) -> str:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001 - only for the report
        return "(version unknown)"


# ---------------------------------------------------------------------------------------------
# Report


def fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def report(args, results: list[Result]) -> str:
    by_name = {r.name: r for r in results}
    kiln, litellm = by_name.get("kiln"), by_name.get("litellm")
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    pin = (f"pinned: wrk on CPU(s) {args.wrk_cpus}, server on CPU(s) {args.server_cpus}"
           if args.wrk_cpus or args.server_cpus else "unpinned (shared)")
    lines = [
        f"Generated by `benches/gateway_bench.py` on {now}.",
        "",
        f"- Command: `{args.command_line}`",
        f"- Machine: {machine_description()}; the gateway under test and wrk share them, {pin}.",
        f"- Load generator: `{args.wrk_version}`, `-t{args.threads} -c{args.connections} -d{args.duration:g}s "
        f"--latency` (closed loop, keep-alive) after a {args.warmup:g}s warm-up; one identical "
        f"chat request ({MAX_TOKENS} max tokens), cached before the run.",
        f"- CPUs busy just before the first run: {args.busy_at_start:.0%}; load average (1/5/15 min) "
        f"at start: {args.load_at_start}; at end: {load_average()}.",
        "- Busy cores: CPU time during the measured run / its wall time, for the server's "
        "processes and for wrk.",
        "",
        "| server | req/s | p50 ms | p75 ms | p90 ms | p99 ms | server busy cores | wrk busy cores "
        "| Kiln generations during run | Kiln log writes dropped |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lat = r.latency_ms
        lines.append(
            f"| {r.name} | {fmt(r.rps, 0)} | {fmt(lat.get('50%'), 3)} | {fmt(lat.get('75%'), 3)} "
            f"| {fmt(lat.get('90%'), 3)} | {fmt(lat.get('99%'), 3)} | {fmt(r.server_cores)} "
            f"| {fmt(r.wrk_cores)} | {'–' if r.generations_during_run is None else r.generations_during_run} "
            f"| {'–' if r.log_writes_dropped is None or r.name != 'kiln' else r.log_writes_dropped} |"
        )
    if kiln and litellm and kiln.rps and litellm.rps:
        lines += ["", f"Kiln / LiteLLM requests/s: **{kiln.rps / litellm.rps:.1f}×**; p99 "
                      f"{kiln.latency_ms['99%']:.3f} ms vs {litellm.latency_ms['99%']:.3f} ms."]
    if kiln and kiln.rps:
        met = kiln.rps >= 20_000 and kiln.latency_ms["99%"] <= 2.0
        lines += ["", f"Goal (≥ 20,000 req/s and p99 ≤ 2 ms for Kiln): {'met' if met else 'not met'}."]
    lines += ["", "Targets and commands:", ""]
    for r in results:
        lines.append(f"- {r.name}: `POST {r.target}`; server: `{r.command}`")
        for note in r.notes:
            lines.append(f"  - {note}")
        for failure in r.failures:
            lines.append(f"  - FAILED: {failure}")
        if r.bytes_per_response:
            lines.append(f"  - {r.bytes_per_response:,.0f} bytes per response (headers included)")
    return "\n".join(lines) + "\n"


def busy_fraction(seconds: float = 1.0) -> float:
    """Share of all CPUs' time spent busy over `seconds` (from /proc/stat)."""
    def sample() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(values), values[3] + values[4]  # total, idle + iowait

    total_0, idle_0 = sample()
    time.sleep(seconds)
    total_1, idle_1 = sample()
    return 1 - (idle_1 - idle_0) / max(1, total_1 - total_0)


def wrk_version(wrk: str) -> str:
    try:
        out = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "wrk"
    return out.splitlines()[0].split(" Copyright")[0].strip() if out else "wrk"


# ---------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    venv_bin = Path(sys.executable).parent
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=15, help="seconds of the measured wrk run")
    p.add_argument("--warmup", type=float, default=3, help="seconds of wrk before it (not measured)")
    p.add_argument("--connections", type=int, default=16, help="wrk connections (-c)")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (-t)")
    p.add_argument("--kiln-url", help="use this running Kiln instead of starting one (e.g. http://127.0.0.1:8787)")
    p.add_argument("--kiln-bin", default=default_kiln_bin())
    p.add_argument("--skip-kiln", action="store_true", help="only LiteLLM (Kiln still serves as its upstream)")
    p.add_argument("--skip-litellm", action="store_true")
    p.add_argument("--litellm-bin", default=str(venv_bin / "litellm"))
    p.add_argument("--litellm-workers", type=int, default=os.cpu_count() or 1,
                   help="LiteLLM's --num_workers (default: one per core, its best on this machine)")
    p.add_argument("--litellm-args", default="", help="more arguments for `litellm`, e.g. '--run_granian'")
    p.add_argument("--model", default="smollm2-135m-instruct", help="the local model Kiln loads")
    p.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR,
                   help="installed models, linked into the temporary data dir of the Kiln it starts")
    p.add_argument("--wrk", default=shutil.which("wrk") or "wrk")
    p.add_argument("--wrk-cpus", help="taskset CPU list for wrk (default: not pinned)")
    p.add_argument("--server-cpus", help="taskset CPU list for the server under test (default: not pinned)")
    p.add_argument("--log-dir", type=Path, default=DEFAULT_LOG_DIR)
    p.add_argument("--output", type=Path, help="also write the markdown report to this file")
    args = p.parse_args()
    args.command_line = " ".join([os.environ.get("KILN_BENCH_COMMAND", sys.argv[0]), *map(shlex.quote, sys.argv[1:])])
    return args


def main() -> int:
    args = parse_args()
    args.load_at_start = load_average()
    args.busy_at_start = busy_fraction()
    if args.busy_at_start > 0.25:
        print(f"bench: warning: the CPUs are {args.busy_at_start:.0%} busy before the run; "
              "other work skews these numbers", file=sys.stderr)
    args.log_dir.mkdir(parents=True, exist_ok=True)
    if shutil.which(args.wrk) is None:
        raise SystemExit(f"wrk not found ({args.wrk}); `scripts/bench gateway` installs it")
    args.wrk_version = wrk_version(args.wrk)
    stop_servers_on_exit()
    work = Path(tempfile.mkdtemp(prefix="kiln-gateway-bench-"))
    atexit.register(shutil.rmtree, work, True)

    kiln: Server | None = None
    if args.kiln_url:
        kiln_base = args.kiln_url.rstrip("/")
        if args.server_cpus:
            print("bench: --server-cpus does not pin a Kiln given by --kiln-url", file=sys.stderr)
    else:
        # A fresh data dir (so a fresh gateway.db), with the installed models linked in.
        data = work / "data"
        data.mkdir()
        (data / "models").symlink_to(args.models_dir.resolve())
        port = free_port()
        argv = pinned([args.kiln_bin, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data),
                       "--models", args.model, "--offline"], args.server_cpus)
        kiln = Server("kiln", argv, port, "/health", args.log_dir / "gateway-kiln.log", STARTUP_TIMEOUT_S)
        print(f"bench: starting Kiln: {kiln.command}", file=sys.stderr)
        kiln.start()
        kiln_base = kiln.base

    results: list[Result] = []
    plan = ([] if args.skip_kiln else [("kiln", lambda: kiln_gateway(args, kiln_base, kiln, work))]) + \
           ([] if args.skip_litellm else [("litellm", lambda: litellm_proxy(args, kiln_base, work))])
    for name, run in plan:
        print(f"bench: {name}: measuring", file=sys.stderr)
        try:
            result = run()
        except RuntimeError as error:
            result = Result(name, failures=[str(error)])
        results.append(result)
        for failure in result.failures:
            print(f"bench: {name}: FAILED: {failure}", file=sys.stderr)
    if kiln:
        kiln.stop()

    text = report(args, results)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        print(f"bench: wrote {args.output}", file=sys.stderr)
    return 1 if any(r.failures for r in results) or not results else 0


if __name__ == "__main__":
    sys.exit(main())
