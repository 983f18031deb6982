#!/usr/bin/env python3
"""Vectorize's index beside hnswlib and faiss-cpu on the same vectors: insert throughput, recall@10,
single-thread queries per second and p50/p99 latency, per metric (cosine, euclidean, dot-product).

One run, in this order, everything on this machine and one thing at a time:

  1. `recall_bench` (the kiln-vectorize example) generates the data set, writes it with its exact
     top-10 per query to `recall-{metric}.bin`, and measures Kiln's index in process: the usearch
     HNSW graph exactly as the store configures it (M 16, ef_add 128, ef 128), built on every core,
     queried one query at a time on one thread. Its stdout is parsed.
  2. hnswlib (M 16, ef_construction 128) and faiss `IndexHNSWFlat` (M 16, efConstruction 128) are
     built on the same base vectors with every core, then queried one query at a time with one
     thread while ef / efSearch sweeps (default 16, 32, 64, 128, 256).
  3. Kiln over HTTP: `kiln serve` with a fresh Vectorize directory; per metric an index is created,
     the base vectors are upserted as NDJSON in batches of 5,000 (one connection, sequential),
     insert throughput is taken both until the last upsert is acknowledged (durable in the
     mutation log) and until `info` reports its mutation applied (searchable); once the server is
     idle again (the apply thread has finished building or extending the HNSW graph), the queries
     are sent one at a time over one keep-alive connection; recall@10 from the returned ids.

The data set is synthetic: `kiln_vectorize::bench::clustered_vectors` (100 Gaussian clusters,
centres ~ N(0, 1), points = centre + N(0, 0.6²) per coordinate, 384 dimensions, L2-normalised for
cosine; seed 7), 1,000 extra vectors from the same generator as queries.

Needs numpy, hnswlib and faiss-cpu (`scripts/bench vectorize` installs them into the bench venv
and builds Kiln and the example first). The server it starts is killed on exit and its temporary
files (the data set included) are removed unless --keep-data.
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import http.client
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

BENCHES_DIR = Path(__file__).resolve().parent
if str(BENCHES_DIR) not in sys.path:  # bench_common lives beside this script, however it is run
    sys.path.insert(0, str(BENCHES_DIR))

from bench_common import (  # noqa: E402
    CACHE_DIR, DEFAULT_LOG_DIR, Server, default_kiln_bin, free_port, load_average,
    machine_description, stop_servers_on_exit,
)

import numpy as np  # noqa: E402

REPO_DIR = BENCHES_DIR.parent
DEFAULT_MODELS_DIR = CACHE_DIR / "data" / "models"
STARTUP_TIMEOUT_S = 300
REQUEST_TIMEOUT_S = 600
METRICS = ("cosine", "euclidean", "dot-product")
ACCOUNT = "bench"
RECALL_TARGET = 0.95
KILN_EF = 128  # kiln_vectorize::bench::EXPANSION_SEARCH, what the store searches with
K = 10


@dataclass
class Row:
    """One measured configuration of one library on one metric."""
    library: str
    config: str
    recall: float | None = None
    qps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    build_s: float | None = None
    insert_rate: str = ""  # free text: vectors/s, possibly two figures
    ef: int | None = None
    notes: list = field(default_factory=list)


@dataclass
class MetricResult:
    metric: str
    kiln: Row | None = None
    kiln_http: Row | None = None
    hnswlib: list = field(default_factory=list)
    faiss: list = field(default_factory=list)
    failures: list = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# The data set and Kiln in process (recall_bench)


RECALL_LINE = re.compile(
    r"^(?P<metric>\S+)\s+exact: recall [\d.]+,\s*(?P<exact_qps>[\d.]+) q/s \| usearch HNSW "
    r"\((?P<config>[^)]*)\): recall (?P<recall>[\d.]+),\s*(?P<qps>[\d.]+) q/s, build "
    r"(?P<build>[\d.]+) s \| data: (?P<path>.+)$")


def run_recall_bench(args, work: Path) -> tuple[dict, str, float]:
    """Runs the example; returns {metric: parsed line}, its first line and its wall time."""
    argv = ([args.recall_bench_bin] if args.recall_bench_bin else
            ["cargo", "run", "--release", "--locked", "-q", "-p", "kiln-vectorize", "--example",
             "recall_bench", "--"]) + [str(args.count), str(work)]
    print(f"bench: running {' '.join(map(shlex.quote, argv))}", file=sys.stderr)
    started = time.monotonic()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=REPO_DIR)
    lines = []
    for line in process.stdout:
        print(f"bench: recall_bench: {line.rstrip()}", file=sys.stderr)
        lines.append(line.rstrip())
    if process.wait() != 0:
        raise RuntimeError(f"recall_bench exited with {process.returncode}")
    parsed = {}
    for line in lines:
        if m := RECALL_LINE.match(line):
            parsed[m.group("metric")] = m.groupdict()
    if not parsed:
        raise RuntimeError("could not parse recall_bench's output:\n" + "\n".join(lines))
    return parsed, lines[0] if lines else "", time.monotonic() - started


@dataclass
class DataSet:
    metric: str
    base: np.ndarray
    queries: np.ndarray
    truth: np.ndarray  # queries × k, base row numbers, best first


def load_dataset(path: Path) -> DataSet:
    with open(path, "rb") as f:
        header = json.loads(f.readline())
    n, d, q, k = header["count"], header["dimensions"], header["queries"], header["k"]
    base = np.fromfile(path, "<f4", n * d, offset=header["base_offset"]).reshape(n, d)
    queries = np.fromfile(path, "<f4", q * d, offset=header["queries_offset"]).reshape(q, d)
    truth = np.fromfile(path, "<u4", q * k, offset=header["truth_offset"]).reshape(q, k)
    return DataSet(header["metric"], np.ascontiguousarray(base), np.ascontiguousarray(queries),
                   truth.astype(np.int64))


def recall_at_k(found: list, truth: np.ndarray) -> float:
    hits = sum(len(set(int(x) for x in row[:K]) & set(truth[i, :K].tolist())) for i, row in enumerate(found))
    return hits / (len(found) * K)


def latency_stats(latencies_s: list, wall_s: float) -> tuple[float, float, float]:
    """QPS over the whole loop, p50 and p99 in ms."""
    ms = np.array(latencies_s) * 1000
    return len(latencies_s) / wall_s, float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


# ---------------------------------------------------------------------------------------------
# hnswlib and faiss


def sweep(search, queries: np.ndarray, truth: np.ndarray, warmup: int = 50) -> tuple[float, float, float, float]:
    """Queries one at a time through `search(q) -> ids`; returns recall, QPS, p50 ms, p99 ms."""
    for q in queries[:warmup]:
        search(q)
    found, latencies = [], []
    clock = time.perf_counter
    started = clock()
    for q in queries:
        t0 = clock()
        ids = search(q)
        latencies.append(clock() - t0)
        found.append(ids)
    wall = clock() - started
    qps, p50, p99 = latency_stats(latencies, wall)
    return recall_at_k(found, truth), qps, p50, p99


def run_hnswlib(args, data: DataSet) -> list[Row]:
    import hnswlib

    space = {"cosine": "cosine", "euclidean": "l2", "dot-product": "ip"}[data.metric]
    n, d = data.base.shape
    index = hnswlib.Index(space=space, dim=d)
    index.init_index(max_elements=n, M=16, ef_construction=128, random_seed=100)
    index.set_num_threads(os.cpu_count() or 1)
    started = time.perf_counter()
    index.add_items(data.base, np.arange(n))
    build = time.perf_counter() - started
    index.set_num_threads(1)
    rows = []
    for ef in args.efs:
        index.set_ef(max(ef, K))
        recall, qps, p50, p99 = sweep(lambda q: index.knn_query(q, k=K)[0][0], data.queries, data.truth)
        rows.append(Row("hnswlib", f"space {space}, M 16, ef_c 128, ef {ef}", recall, qps, p50, p99,
                        build, f"{n / build:,.0f} vec/s", ef=ef))
        print(f"bench: hnswlib {data.metric} ef {ef}: recall {recall:.4f}, {qps:,.0f} q/s", file=sys.stderr)
    del index
    return rows


def run_faiss(args, data: DataSet) -> list[Row]:
    import faiss

    n, d = data.base.shape
    base, queries = data.base, data.queries
    if data.metric == "cosine":  # inner product of unit vectors (they already are: kept exact)
        base, queries = base.copy(), queries.copy()
        faiss.normalize_L2(base)
        faiss.normalize_L2(queries)
    metric = faiss.METRIC_L2 if data.metric == "euclidean" else faiss.METRIC_INNER_PRODUCT
    index = faiss.IndexHNSWFlat(d, 16, metric)
    index.hnsw.efConstruction = 128
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    started = time.perf_counter()
    index.add(base)
    build = time.perf_counter() - started
    faiss.omp_set_num_threads(1)
    metric_name = "L2" if metric == faiss.METRIC_L2 else "IP"
    rows = []
    for ef in args.efs:
        index.hnsw.efSearch = max(ef, K)
        recall, qps, p50, p99 = sweep(lambda q: index.search(q.reshape(1, -1), K)[1][0], queries, data.truth)
        rows.append(Row("faiss", f"HNSWFlat {metric_name}, M 16, efC 128, efSearch {ef}", recall, qps, p50,
                        p99, build, f"{n / build:,.0f} vec/s", ef=ef))
        print(f"bench: faiss {data.metric} efSearch {ef}: recall {recall:.4f}, {qps:,.0f} q/s", file=sys.stderr)
    del index
    return rows


# ---------------------------------------------------------------------------------------------
# Kiln over HTTP


class Client:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, base: str):
        parts = urllib.parse.urlsplit(base)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=REQUEST_TIMEOUT_S)

    def send(self, method: str, path: str, body: bytes | None = None,
             content_type: str = "application/json") -> tuple[int, bytes]:
        headers = {"content-type": content_type} if body is not None else {}
        self.connection.request(method, path, body=body, headers=headers)
        response = self.connection.getresponse()
        return response.status, response.read()

    def json(self, method: str, path: str, body: dict | None = None) -> dict:
        status, data = self.send(method, path, None if body is None else json.dumps(body).encode())
        if status not in (200, 201):
            raise RuntimeError(f"{method} {path}: {status} {data[:300]!r}")
        return json.loads(data)

    def close(self) -> None:
        self.connection.close()


def ndjson_batches(base: np.ndarray, batch: int) -> list[bytes]:
    """NDJSON bodies, ids = row numbers. Each f32 is written as the shortest decimal of its
    exact double value (what `JSON.stringify` of a Float32Array's numbers gives), which reads
    back as the same f32."""
    bodies = []
    for start in range(0, len(base), batch):
        rows = base[start:start + batch].tolist()
        bodies.append("".join(
            f'{{"id":"{start + i}","values":{json.dumps(row)}}}\n' for i, row in enumerate(rows)).encode())
    return bodies


def server_idle(server, seconds: float = 1.0) -> float:
    """Busy cores of the server over `seconds`."""
    before = server.cpu_seconds()
    time.sleep(seconds)
    after = server.cpu_seconds()
    return 0.0 if before is None or after is None else (after - before) / seconds


def run_kiln_http(args, data: DataSet, kiln_base: str, server) -> Row:
    n, d = data.base.shape
    name = f"bench-{data.metric}"
    prefix = f"/client/v4/accounts/{ACCOUNT}/vectorize/v2/indexes"
    row = Row("Kiln HTTP", f"index {name}: M 16, ef_add 128, ef 128; topK {K}, 1 connection, sequential")
    client = Client(kiln_base)
    try:
        client.send("DELETE", f"{prefix}/{name}")  # a leftover from an interrupted run
        client.json("POST", prefix, {"name": name, "config": {"dimensions": d, "metric": data.metric}})
        encode_started = time.perf_counter()
        bodies = ndjson_batches(data.base, args.batch)
        encode_s = time.perf_counter() - encode_started
        megabytes = sum(map(len, bodies)) / 1e6
        print(f"bench: Kiln HTTP {data.metric}: {len(bodies)} NDJSON bodies, {megabytes:,.0f} MB, "
              f"encoded in {encode_s:.1f} s (not timed)", file=sys.stderr)

        started = time.perf_counter()
        last = None
        for body in bodies:
            status, answer = client.send("POST", f"{prefix}/{name}/upsert", body, "application/x-ndjson")
            if status != 200:
                raise RuntimeError(f"upsert: {status} {answer[:300]!r}")
            last = json.loads(answer)["result"]["mutationId"]
        acknowledged = time.perf_counter() - started
        while True:
            info = client.json("GET", f"{prefix}/{name}/info")["result"]
            if info.get("processedUpToMutation") == last:
                break
            if time.perf_counter() - started > REQUEST_TIMEOUT_S:
                raise RuntimeError(f"mutations not applied after {REQUEST_TIMEOUT_S} s: {info}")
            time.sleep(0.02)
        applied = time.perf_counter() - started
        if info.get("vectorCount") != n:
            row.notes.append(f"info reports {info.get('vectorCount')} vectors, expected {n}")
        row.build_s = applied
        row.insert_rate = f"{n / applied:,.0f} vec/s applied ({n / acknowledged:,.0f} vec/s acknowledged)"
        row.notes.append(
            f"insert: {len(bodies)} upserts of ≤ {args.batch:,} vectors ({megabytes:,.0f} MB NDJSON): "
            f"all acknowledged after {acknowledged:.1f} s, all applied after {applied:.1f} s")

        # The apply thread builds the graph (and rebuilds it as the index grows) after applying
        # a batch; queries meanwhile fall back to exact search or share the CPUs with it. Wait
        # until the server is idle, then warm up.
        settle_started = time.perf_counter()
        busy = server_idle(server) if server else 0.0
        while busy > 0.05 and time.perf_counter() - settle_started < 600:
            busy = server_idle(server)
        settle = time.perf_counter() - settle_started
        query_bodies = [json.dumps({"vector": q.tolist(), "topK": K}).encode() for q in data.queries]
        path = f"{prefix}/{name}/query"
        warm = []
        for body in query_bodies[:100]:
            t0 = time.perf_counter()
            status, answer = client.send("POST", path, body)
            warm.append(time.perf_counter() - t0)
            if status != 200:
                raise RuntimeError(f"query: {status} {answer[:300]!r}")
        row.notes.append(
            f"queries started {settle:.1f} s after the last mutation was applied, once the server "
            f"was idle ({'its CPU time' if server else 'not checked: --kiln-url'}), after 100 "
            f"warm-up queries (median {np.median(warm) * 1000:.2f} ms)")

        answers, latencies = [], []
        clock = time.perf_counter
        loop_started = clock()
        for body in query_bodies:
            t0 = clock()
            status, answer = client.send("POST", path, body)
            latencies.append(clock() - t0)
            if status != 200:
                raise RuntimeError(f"query: {status} {answer[:300]!r}")
            answers.append(answer)
        wall = clock() - loop_started
        row.qps, row.p50_ms, row.p99_ms = latency_stats(latencies, wall)
        found = [[int(m["id"]) for m in json.loads(a)["result"]["matches"]] for a in answers]
        row.recall = recall_at_k(found, data.truth)
        if server and server.process:
            try:
                rss = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{server.process.pid}/status").read_text())
                row.notes.append(f"server resident memory with this index loaded: {int(rss.group(1)) / 1024:,.0f} MiB")
            except (OSError, AttributeError):
                pass
        print(f"bench: Kiln HTTP {data.metric}: recall {row.recall:.4f}, {row.qps:,.0f} q/s, "
              f"p50 {row.p50_ms:.3f} ms, p99 {row.p99_ms:.3f} ms; {row.insert_rate}", file=sys.stderr)
        client.send("DELETE", f"{prefix}/{name}")  # frees its memory before the next metric
    finally:
        client.close()
    return row


# ---------------------------------------------------------------------------------------------
# Report


def fmt(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def smallest_ef_reaching(rows: list[Row], recall: float) -> Row | None:
    """The sweep's first (smallest-ef) row with recall ≥ `recall`."""
    return next((r for r in sorted(rows, key=lambda r: r.ef) if r.recall is not None and r.recall >= recall), None)


def ratio_line(label: str, kiln: Row | None, peer: Row | None, what: str) -> str:
    if kiln is None or kiln.qps is None or peer is None:
        return f"- {label} / hnswlib {what}: – (no such hnswlib point in the sweep)" if kiln else ""
    return (f"- {label} / hnswlib {what} (ef {peer.ef}: recall {peer.recall:.4f}, {peer.qps:,.0f} q/s): "
            f"**{kiln.qps / peer.qps:.2f}×** (Kiln recall {kiln.recall:.4f}, {kiln.qps:,.0f} q/s)")


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for label, dists in (("numpy", ["numpy"]), ("hnswlib", ["hnswlib", "chroma-hnswlib"]),
                         ("faiss-cpu", ["faiss-cpu"])):
        for dist in dists:
            try:
                found.append(f"{dist} {version(dist)}")
                break
            except PackageNotFoundError:
                continue
        else:
            found.append(f"{label} (version unknown)")
    return ", ".join(found)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def kiln_revision() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO_DIR), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO_DIR), "status", "--porcelain", "crates"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return f"{out}{' (crates/ modified)' if dirty else ''}" if out else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def report(args, results: list[MetricResult], meta: dict) -> str:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Generated by `benches/vector_bench.py` on {now}.",
        "",
        f"- Command: `{args.command_line}`",
        f"- Machine: {machine_description()}; {cpu_model()}. Everything ran on it one step at a "
        f"time (the HTTP client and Kiln share the CPUs). Load average (1/5/15 min) at start: "
        f"{args.load_at_start}; at end: {load_average()}.",
        f"- Versions: Kiln {kiln_revision()} (release build; usearch HNSW), Python "
        f"{platform.python_version()}, {versions()}. Peers: {args.install_note}.",
        f"- Data: **synthetic**, `kiln_vectorize::bench::clustered_vectors`: {args.count:,} base "
        f"vectors × {meta['dimensions']} dimensions in 100 Gaussian clusters (centres ~ N(0, 1), "
        "points = centre + N(0, 0.6²) per coordinate, L2-normalised for cosine, seed 7) and 1,000 "
        "queries from the same generator; ground truth = exact top-10 per query (recall_bench, "
        f"`{meta['recall_bench_header']}`; data set + truth + Kiln in-process run "
        f"{meta['recall_bench_s']:.0f} s).",
        "- Recall@10 = share of each query's exact top-10 ids among the 10 returned. Queries are "
        "sent one at a time; QPS = queries / wall time of the loop, p50/p99 per query. "
        f"hnswlib and faiss: through their Python bindings, 1 thread (`set_num_threads(1)`, "
        f"`omp_set_num_threads(1)`), after 50 warm-up queries; build on all "
        f"{os.cpu_count()} cores. Kiln in process: `recall_bench` (Rust, 1 thread, no per-query "
        "latencies, build on all cores). Kiln HTTP: `kiln serve` on 127.0.0.1, one keep-alive "
        "connection from Python's http.client, `POST …/query {vector, topK: 10}` (ids and "
        "scores returned; Kiln asks the graph for 2 × topK candidates and rescores them exactly), "
        "latency = send → response body read (JSON decoding of the answers after the loop); "
        "insert = `POST …/upsert` NDJSON batches of "
        f"{args.batch:,} (encoded before the clock starts) until acknowledged and until `info` "
        "reports the last mutation applied.",
        f"- Goal (issue 7): Kiln ≥ 1× hnswlib QPS at equal recall, recall ≥ {RECALL_TARGET}. "
        "Kiln's ef is fixed at 128 (not tunable per query), so two hnswlib points are compared: "
        f"its smallest swept ef with recall ≥ {RECALL_TARGET}, and its smallest swept ef whose "
        "recall is at least Kiln's (equal recall); hnswlib at ef 128 is listed too.",
    ]
    for result in results:
        lines += ["", f"### {result.metric}", "",
                  "| library | configuration | recall@10 | QPS (1 thread) | p50 ms | p99 ms | build / load s "
                  "| insert rate |",
                  "|---|---|---|---|---|---|---|---|"]
        all_rows = [r for r in (result.kiln, result.kiln_http) if r] + result.hnswlib + result.faiss
        peer_best = {lib: smallest_ef_reaching(rows, RECALL_TARGET) for lib, rows in
                     (("hnswlib", result.hnswlib), ("faiss", result.faiss))}
        for r in all_rows:
            bold = r is peer_best.get(r.library)
            recall = "–" if r.recall is None else f"{r.recall:.4f}"
            qps = fmt(r.qps)
            lines.append(
                f"| {r.library} | {r.config} | {f'**{recall}**' if bold else recall} "
                f"| {f'**{qps}**' if bold else qps} | {fmt(r.p50_ms, 3)} | {fmt(r.p99_ms, 3)} "
                f"| {fmt(r.build_s, 1)} | {r.insert_rate} |")
        lines.append("")
        lines.append(f"Bold: each peer's smallest swept ef with recall@10 ≥ {RECALL_TARGET}.")
        lines.append("")
        at_target = peer_best.get("hnswlib")
        for label, kiln in (("Kiln in process", result.kiln), ("Kiln HTTP", result.kiln_http)):
            if kiln is None or kiln.recall is None:
                continue
            lines.append(ratio_line(label, kiln, at_target, f"at recall ≥ {RECALL_TARGET}"))
            lines.append(ratio_line(label, kiln, smallest_ef_reaching(result.hnswlib, kiln.recall),
                                    "at equal recall"))
            same_ef = next((r for r in result.hnswlib if r.ef == KILN_EF), None)
            if same_ef:
                lines.append(ratio_line(label, kiln, same_ef, f"at the same ef ({KILN_EF})"))
        for r in all_rows:
            for note in r.notes:
                lines.append(f"- {r.library}: {note}")
        for failure in result.failures:
            lines.append(f"- FAILED: {failure}")
    return "\n".join(line for line in lines if line is not None) + "\n"


# ---------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=100_000, help="base vectors (e.g. 20000 for a smoke run)")
    p.add_argument("--metrics", default=",".join(METRICS), help="comma-separated, of " + ", ".join(METRICS))
    p.add_argument("--http-metrics", help="metrics also measured through Kiln's HTTP API (default: --metrics)")
    p.add_argument("--efs", default="16,32,64,128,256", help="ef / efSearch values the peers sweep")
    p.add_argument("--batch", type=int, default=5000, help="vectors per upsert (Kiln's limit: 5000)")
    p.add_argument("--skip-hnswlib", action="store_true")
    p.add_argument("--skip-faiss", action="store_true")
    p.add_argument("--skip-http", action="store_true")
    p.add_argument("--kiln-url", help="use this running Kiln instead of starting one (its CPU is then not watched)")
    p.add_argument("--kiln-bin", default=default_kiln_bin())
    p.add_argument("--recall-bench-bin", help="the built recall_bench example (default: cargo run --release)")
    p.add_argument("--model", default="smollm2-135m-instruct", help="the local model the Kiln it starts loads")
    p.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR,
                   help="installed models, linked into the temporary data dir of the Kiln it starts")
    p.add_argument("--work-dir", type=Path, help="where the data files and Kiln's data go (default: a new temp dir)")
    p.add_argument("--keep-data", action="store_true", help="keep the work dir (data files, Kiln's indexes)")
    p.add_argument("--log-dir", type=Path, default=DEFAULT_LOG_DIR)
    p.add_argument("--output", type=Path, help="also write the markdown report to this file")
    args = p.parse_args()
    args.metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    args.http_metrics = args.metrics if args.http_metrics is None else \
        [m.strip() for m in args.http_metrics.split(",") if m.strip()]
    for metric in args.metrics + args.http_metrics:
        if metric not in METRICS:
            p.error(f"unknown metric {metric!r}")
    args.efs = sorted({int(x) for x in args.efs.split(",") if x.strip()})
    args.command_line = " ".join([os.environ.get("KILN_BENCH_COMMAND", sys.argv[0]), *map(shlex.quote, sys.argv[1:])])
    args.install_note = os.environ.get("KILN_BENCH_INSTALL", "installed beforehand")
    return args


def main() -> int:
    args = parse_args()
    args.load_at_start = load_average()
    args.log_dir.mkdir(parents=True, exist_ok=True)
    stop_servers_on_exit()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="kiln-vector-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    if not args.keep_data:
        atexit.register(shutil.rmtree, work, True)

    parsed, header, recall_bench_s = run_recall_bench(args, work)
    meta = {"recall_bench_header": header, "recall_bench_s": recall_bench_s, "dimensions": "?"}

    kiln = None
    kiln_base = None
    if args.http_metrics and not args.skip_http:
        if args.kiln_url:
            kiln_base = args.kiln_url.rstrip("/")
        else:
            data_dir = work / "kiln-data"
            data_dir.mkdir(exist_ok=True)
            if not (data_dir / "models").exists():
                (data_dir / "models").symlink_to(args.models_dir.resolve())
            port = free_port()
            argv = [args.kiln_bin, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir),
                    "--models", args.model, "--offline", "--vectorize-dir", str(work / "vectorize")]
            kiln = Server("kiln", argv, port, "/health", args.log_dir / "vector-kiln.log", STARTUP_TIMEOUT_S)
            print(f"bench: starting Kiln: {kiln.command}", file=sys.stderr)
            kiln.start()
            kiln_base = kiln.base

    results = []
    for metric in args.metrics:
        result = MetricResult(metric)
        results.append(result)
        line = parsed.get(metric)
        if line is None:
            result.failures.append("recall_bench printed no line for this metric")
            continue
        data = load_dataset(Path(line["path"]))
        meta["dimensions"] = data.base.shape[1]
        n = data.base.shape[0]
        build = float(line["build"])
        result.kiln = Row("Kiln in process", f"usearch HNSW ({line['config']}), recall_bench",
                          float(line["recall"]), float(line["qps"]), build_s=build,
                          insert_rate=f"{n / build:,.0f} vec/s")
        result.kiln.notes.append(f"exact search (brute force, 1 thread): {float(line['exact_qps']):,.1f} q/s")
        for name, run, skip in (("hnswlib", run_hnswlib, args.skip_hnswlib), ("faiss", run_faiss, args.skip_faiss)):
            if skip:
                continue
            print(f"bench: {name} {metric}: building", file=sys.stderr)
            try:
                setattr(result, name, run(args, data))
            except Exception as error:  # noqa: BLE001 - reported, the run goes on
                result.failures.append(f"{name}: {type(error).__name__}: {error}")
        if kiln_base and metric in args.http_metrics:
            print(f"bench: Kiln HTTP {metric}: inserting", file=sys.stderr)
            try:
                result.kiln_http = run_kiln_http(args, data, kiln_base, kiln)
            except (RuntimeError, OSError, http.client.HTTPException, KeyError, ValueError) as error:
                result.failures.append(f"Kiln HTTP: {type(error).__name__}: {error}")
        for failure in result.failures:
            print(f"bench: {metric}: FAILED: {failure}", file=sys.stderr)
        del data
        if not args.keep_data:  # the data file is no longer needed
            Path(line["path"]).unlink(missing_ok=True)
    if kiln:
        kiln.stop()

    text = report(args, results, meta)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        print(f"bench: wrote {args.output}", file=sys.stderr)
    return 1 if any(r.failures for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
