#!/usr/bin/env python3
"""Vectorize's index beside hnswlib and faiss-cpu on the same vectors: recall@10 and single-thread
queries per second per metric (cosine, euclidean, dot-product), in process and over HTTP.

One run, everything on this machine:

  1. `recall_bench` (the kiln-vectorize example) generates the data set and writes it with its exact
     top-10 per query to `recall-{metric}.bin` (and prints its own quick ef sweep of Kiln's graph).
  2. In process, per metric: hnswlib (M 16, ef_construction 128) and faiss `IndexHNSWFlat` (M 16,
     efConstruction 128) are built with every core; Kiln's graph is built (every core) by a
     `recall_bench serve` process, which then answers "run every query at ef N" requests. The ef
     sweep is run `--rounds` times, **interleaving** the libraries (Kiln, hnswlib, faiss for one
     ef, then the next ef, …), so that they share whatever else the machine is doing; the median
     QPS of the rounds is reported. Every library answers one query at a time on one thread:
     Kiln in a Rust loop, exactly as the store answers (the graph proposes 2 × topK, rescored
     exactly in f64); hnswlib and faiss both in their C++ loop (one call with all queries, 1
     thread: `knn_query(num_threads=1)`, `omp_set_num_threads(1)`) and one Python call per query.
     QPS is also given per CPU-second of the querying thread, which other load disturbs less.
  3. Over HTTP, per metric: `kiln serve` with a fresh Vectorize directory (the base vectors are
     upserted as NDJSON in batches of 5,000; insert throughput until acknowledged and until
     applied), and, as a peer, hnswlib behind a minimal Python HTTP server (`http.server`, the
     same JSON body and answer shape, ef = Kiln's default). Queries are sent one at a time over
     one keep-alive connection from Python's http.client, alternating the two servers for
     `--rounds` rounds; recall@10 from the returned ids.

The data set is synthetic: `kiln_vectorize::bench::clustered_vectors` (100 Gaussian clusters,
centres ~ N(0, 1), points = centre + N(0, 0.6²) per coordinate, 384 dimensions, L2-normalised for
cosine; seed 7), 1,000 extra vectors from the same generator as queries.

Needs numpy, hnswlib and faiss-cpu (`scripts/bench vectorize` installs them into the bench venv
and builds Kiln and the example first). The servers it starts are killed on exit and its temporary
files (the data set included) are removed unless --keep-data.

`vector_bench.py --serve-hnswlib FILE PORT EF` is the hnswlib HTTP peer (used by the run itself).
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
import socket
import statistics
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
    CACHE_DIR, DEFAULT_LOG_DIR, Server, cpu_model, default_kiln_bin, free_port, kiln_revision,
    load_average, machine_description, stop_servers_on_exit,
)

import numpy as np  # noqa: E402

REPO_DIR = BENCHES_DIR.parent
DEFAULT_MODELS_DIR = CACHE_DIR / "data" / "models"
STARTUP_TIMEOUT_S = 300
REQUEST_TIMEOUT_S = 600
METRICS = ("cosine", "euclidean", "dot-product")
ACCOUNT = "bench"
RECALL_TARGET = 0.95
K = 10


@dataclass
class Point:
    """One library at one ef: recall (the same every round) and QPS per round."""
    library: str
    ef: int
    recall: float = 0.0
    qps: list = field(default_factory=list)
    cpu_qps: list = field(default_factory=list)
    p50_ms: float | None = None
    p99_ms: float | None = None

    @property
    def median_qps(self) -> float:
        return statistics.median(self.qps)

    @property
    def median_cpu_qps(self) -> float | None:
        return statistics.median(self.cpu_qps) if self.cpu_qps else None


@dataclass
class HttpRow:
    library: str
    config: str
    recall: float | None = None
    qps: list = field(default_factory=list)
    p50_ms: float | None = None
    p99_ms: float | None = None
    build_s: float | None = None
    insert_rate: str = ""
    notes: list = field(default_factory=list)

    @property
    def median_qps(self) -> float | None:
        return statistics.median(self.qps) if self.qps else None


@dataclass
class MetricResult:
    metric: str
    points: dict = field(default_factory=dict)  # (library, ef) -> Point
    builds: dict = field(default_factory=dict)  # library -> seconds
    kiln_default_ef: int | None = None
    exact_qps: float | None = None
    http: list = field(default_factory=list)  # HttpRow
    notes: list = field(default_factory=list)
    failures: list = field(default_factory=list)

    def curve(self, library: str) -> list:
        return sorted((p for (lib, _), p in self.points.items() if lib == library), key=lambda p: p.ef)


# ---------------------------------------------------------------------------------------------
# The data set (recall_bench)


RECALL_LINE = re.compile(
    r"^(?P<metric>\S+)\s+exact: recall [\d.]+,\s*(?P<exact_qps>[\d.]+) q/s \| Kiln HNSW "
    r"\((?P<config>[^)]*)\): recall (?P<recall>[\d.]+),\s*(?P<qps>[\d.]+) q/s, build "
    r"(?P<build>[\d.]+) s \| data: (?P<path>.+)$")


def recall_bench_argv(args) -> list[str]:
    return ([args.recall_bench_bin] if args.recall_bench_bin else
            ["cargo", "run", "--release", "--locked", "-q", "-p", "kiln-vectorize", "--example",
             "recall_bench", "--"])


def run_recall_bench(args, work: Path) -> tuple[dict, str, float]:
    """Runs the example; returns {metric: its lines}, its first line and its wall time."""
    argv = recall_bench_argv(args) + [str(args.count), str(work), ",".join(map(str, args.efs))]
    print(f"bench: running {' '.join(map(shlex.quote, argv))}", file=sys.stderr)
    started = time.monotonic()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=REPO_DIR)
    lines = []
    for line in process.stdout:
        print(f"bench: recall_bench: {line.rstrip()}", file=sys.stderr)
        lines.append(line.rstrip())
    if process.wait() != 0:
        raise RuntimeError(f"recall_bench exited with {process.returncode}")
    parsed: dict = {}
    for line in lines:
        if m := RECALL_LINE.match(line):
            parsed.setdefault(m.group("metric"), []).append(m.groupdict())
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
# In process: Kiln (recall_bench serve), hnswlib and faiss, one ef at a time, interleaved


class KilnInProcess:
    """`recall_bench serve FILE`: builds Kiln's graph, then measures one ef per request."""

    READY = re.compile(r"^ready: build (?P<build>[\d.]+) s, default ef (?P<ef>\d+)")
    ANSWER = re.compile(r"^ef (?P<ef>\d+): recall (?P<recall>[\d.]+), (?P<qps>[\d.]+) q/s, (?P<cpu>\S+) q/s of CPU time")

    def __init__(self, args, path: Path):
        argv = recall_bench_argv(args) + ["serve", str(path)]
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO_DIR)
        line = self.process.stdout.readline()
        m = self.READY.match(line)
        if not m:
            raise RuntimeError(f"recall_bench serve: unexpected {line!r}")
        self.build_s, self.default_ef = float(m.group("build")), int(m.group("ef"))

    def measure(self, ef: int) -> tuple[float, float, float | None]:
        self.process.stdin.write(f"{ef}\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        m = self.ANSWER.match(line)
        if not m:
            raise RuntimeError(f"recall_bench serve: unexpected {line!r}")
        cpu = None if m.group("cpu") == "-" else float(m.group("cpu"))
        return float(m.group("recall")), float(m.group("qps")), cpu

    def close(self) -> None:
        try:
            self.process.stdin.close()
            self.process.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()


def timed_batch(search_all, queries: np.ndarray) -> tuple[np.ndarray, float, float | None]:
    """One call that answers every query in the library's own loop: ids, QPS, QPS per CPU-second
    of this thread (the library runs its single-threaded loop in it)."""
    search_all(queries[:100])
    cpu0, t0 = time.thread_time(), time.perf_counter()
    ids = search_all(queries)
    wall, cpu = time.perf_counter() - t0, time.thread_time() - cpu0
    return ids, len(queries) / wall, (len(queries) / cpu if cpu > 0 else None)


def timed_loop(search_one, queries: np.ndarray, warmup: int = 50) -> tuple[list, float, float | None, float, float]:
    """One Python call per query: ids, QPS, CPU QPS, p50 ms, p99 ms."""
    for q in queries[:warmup]:
        search_one(q)
    found, latencies = [], []
    clock = time.perf_counter
    cpu0, started = time.thread_time(), clock()
    for q in queries:
        t0 = clock()
        found.append(search_one(q))
        latencies.append(clock() - t0)
    wall, cpu = clock() - started, time.thread_time() - cpu0
    qps, p50, p99 = latency_stats(latencies, wall)
    return found, qps, (len(queries) / cpu if cpu > 0 else None), p50, p99


def build_hnswlib(data: DataSet):
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
    return index, space, build


def build_faiss(data: DataSet):
    import faiss

    base, queries = data.base, data.queries
    if data.metric == "cosine":  # inner product of unit vectors (they already are: kept exact)
        base, queries = base.copy(), queries.copy()
        faiss.normalize_L2(base)
        faiss.normalize_L2(queries)
    metric = faiss.METRIC_L2 if data.metric == "euclidean" else faiss.METRIC_INNER_PRODUCT
    index = faiss.IndexHNSWFlat(base.shape[1], 16, metric)
    index.hnsw.efConstruction = 128
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    started = time.perf_counter()
    index.add(base)
    build = time.perf_counter() - started
    faiss.omp_set_num_threads(1)
    return index, queries, build


def run_in_process(args, data: DataSet, path: Path, result: MetricResult) -> None:
    """Builds everything, then runs the ef sweep `--rounds` times, interleaving the libraries."""
    libraries = []  # (name, measure(ef) -> (recall, qps, cpu_qps, p50, p99))
    closers = []
    try:
        print(f"bench: {data.metric}: building Kiln's graph (recall_bench serve)", file=sys.stderr)
        kiln = KilnInProcess(args, path)
        closers.append(kiln.close)
        result.builds["Kiln"] = kiln.build_s
        result.kiln_default_ef = kiln.default_ef
        libraries.append(("Kiln", lambda ef: (*kiln.measure(ef), None, None)))
        if not args.skip_hnswlib:
            print(f"bench: {data.metric}: building hnswlib", file=sys.stderr)
            hnsw, space, build = build_hnswlib(data)
            result.builds["hnswlib"] = build
            result.notes.append(f"hnswlib: space {space}, M 16, ef_construction 128")

            def hnsw_batch(ef):
                hnsw.set_ef(max(ef, K))
                ids, qps, cpu = timed_batch(lambda qs: hnsw.knn_query(qs, k=K, num_threads=1)[0], data.queries)
                return recall_at_k(list(ids), data.truth), qps, cpu, None, None

            def hnsw_loop(ef):
                hnsw.set_ef(max(ef, K))
                found, qps, cpu, p50, p99 = timed_loop(lambda q: hnsw.knn_query(q, k=K)[0][0], data.queries)
                return recall_at_k(found, data.truth), qps, cpu, p50, p99

            libraries += [("hnswlib", hnsw_batch), ("hnswlib (Python loop)", hnsw_loop)]
        if not args.skip_faiss:
            import faiss

            print(f"bench: {data.metric}: building faiss", file=sys.stderr)
            fidx, fqueries, build = build_faiss(data)
            result.builds["faiss"] = build

            def faiss_batch(ef):
                fidx.hnsw.efSearch = max(ef, K)
                ids, qps, cpu = timed_batch(lambda qs: fidx.search(qs, K)[1], fqueries)
                return recall_at_k(list(ids), data.truth), qps, cpu, None, None

            libraries.append(("faiss", faiss_batch))
            result.notes.append(f"faiss: IndexHNSWFlat {'L2' if data.metric == 'euclidean' else 'IP'}, "
                                f"M 16, efConstruction 128 (faiss {faiss.__version__})")
        for round_number in range(args.rounds):
            for ef in args.efs:
                for name, measure in libraries:
                    recall, qps, cpu, p50, p99 = measure(ef)
                    point = result.points.setdefault((name, ef), Point(name, ef))
                    point.recall = recall
                    point.qps.append(qps)
                    if cpu:
                        point.cpu_qps.append(cpu)
                    point.p50_ms, point.p99_ms = p50, p99
            line = ", ".join(f"{name} {result.points[(name, args.efs[-1])].qps[-1]:,.0f}" for name, _ in libraries)
            print(f"bench: {data.metric}: round {round_number + 1}/{args.rounds} done (ef {args.efs[-1]}: {line} q/s)",
                  file=sys.stderr)
    finally:
        for close in closers:
            close()


# ---------------------------------------------------------------------------------------------
# Over HTTP: Kiln, and hnswlib behind a minimal Python HTTP server


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


def wait_idle(server) -> float:
    started = time.perf_counter()
    busy = server_idle(server) if server else 0.0
    while busy > 0.05 and time.perf_counter() - started < 600:
        busy = server_idle(server)
    return time.perf_counter() - started


def query_pass(client: Client, path: str, bodies: list) -> tuple[list, float, float, float]:
    """Every query once, one at a time: answers, QPS, p50 ms, p99 ms."""
    answers, latencies = [], []
    clock = time.perf_counter
    started = clock()
    for body in bodies:
        t0 = clock()
        status, answer = client.send("POST", path, body)
        latencies.append(clock() - t0)
        if status != 200:
            raise RuntimeError(f"query: {status} {answer[:300]!r}")
        answers.append(answer)
    qps, p50, p99 = latency_stats(latencies, clock() - started)
    return answers, qps, p50, p99


def found_ids(answers: list) -> list:
    return [[int(m["id"]) for m in json.loads(a)["result"]["matches"]] for a in answers]


def rss_mib(server) -> float | None:
    try:
        status = Path(f"/proc/{server.process.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024
    except (OSError, AttributeError):
        return None


def load_kiln(args, data: DataSet, kiln_base: str, server, default_ef: int | None) -> tuple[HttpRow, str]:
    """Creates the index and upserts the base vectors; returns the row and the query path."""
    n, d = data.base.shape
    name = f"bench-{data.metric}"
    prefix = f"/client/v4/accounts/{ACCOUNT}/vectorize/v2/indexes"
    row = HttpRow("Kiln HTTP", f"index {name}: M 16, ef_add 128, ef {default_ef or '?'} (its default for topK {K}); "
                               f"`POST …/query {{vector, topK: {K}}}`")
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
            f"all acknowledged after {acknowledged:.1f} s, all applied (searchable) after {applied:.1f} s")
        settle = wait_idle(server)
        row.notes.append(f"queries started {settle:.1f} s after the last mutation was applied, once the server "
                         f"was idle ({'its CPU time' if server else 'not checked: --kiln-url'})")
    finally:
        client.close()
    return row, f"{prefix}/{name}/query"


def run_http(args, data: DataSet, kiln_base: str, kiln_server, result: MetricResult) -> None:
    kiln_row, kiln_path = load_kiln(args, data, kiln_base, kiln_server, result.kiln_default_ef)
    result.http.append(kiln_row)
    peer_row = None
    peer = None
    try:
        if not args.skip_hnswlib:
            port = free_port()
            ef = result.kiln_default_ef or 64
            argv = [sys.executable, str(Path(__file__).resolve()), "--serve-hnswlib", str(args.data_paths[data.metric]),
                    str(port), str(ef)]
            peer = Server("hnswlib-http", argv, port, "/health", args.log_dir / f"vector-hnswlib-{data.metric}.log",
                          STARTUP_TIMEOUT_S)
            print(f"bench: {data.metric}: starting the hnswlib HTTP peer: {peer.command}", file=sys.stderr)
            started = time.perf_counter()
            peer.start()
            peer_row = HttpRow("hnswlib HTTP", f"hnswlib (M 16, ef_construction 128, ef {ef}) behind Python's "
                                               "`http.server` (HTTP/1.1 keep-alive, JSON in and out, 1 thread)",
                               build_s=time.perf_counter() - started)
            result.http.append(peer_row)
        bodies = [json.dumps({"vector": q.tolist(), "topK": K}).encode() for q in data.queries]
        targets = [(kiln_row, Client(kiln_base), kiln_path)]
        if peer_row:
            targets.append((peer_row, Client(peer.base), "/query"))
        for row, client, path in targets:  # warm-up
            query_pass(client, path, bodies[:100])
        for _ in range(args.rounds):
            for row, client, path in targets:
                answers, qps, p50, p99 = query_pass(client, path, bodies)
                row.qps.append(qps)
                row.p50_ms, row.p99_ms = p50, p99
                row.recall = recall_at_k(found_ids(answers), data.truth)
        for row, client, _ in targets:
            client.close()
        if kiln_server and kiln_server.process:
            if (rss := rss_mib(kiln_server)) is not None:
                kiln_row.notes.append(f"server resident memory with this index loaded: {rss:,.0f} MiB")
        for row in (kiln_row, peer_row):
            if row:
                print(f"bench: {row.library} {data.metric}: recall {row.recall:.4f}, {row.median_qps:,.0f} q/s, "
                      f"p50 {row.p50_ms:.3f} ms, p99 {row.p99_ms:.3f} ms", file=sys.stderr)
    finally:
        if peer:
            peer.stop()
        client = Client(kiln_base)
        client.send("DELETE", kiln_path.rsplit("/", 1)[0])  # frees its memory before the next metric
        client.close()


def serve_hnswlib(path: str, port: int, ef: int) -> int:
    """The HTTP peer: hnswlib on the data set's base vectors, `POST /query {vector, topK}` →
    `{"result": {"matches": [{"id", "score"}]}}`, `GET /health`."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    data = load_dataset(Path(path))
    index, _, _ = build_hnswlib(data)
    index.set_ef(ef)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        wbufsize = -1  # headers and body leave in one write (flushed after each request)

        def setup(self):
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):  # noqa: N802
            self.answer(200 if self.path == "/health" else 404, b"ok")

        def do_POST(self):  # noqa: N802
            request = json.loads(self.rfile.read(int(self.headers["content-length"])))
            vector = np.asarray(request["vector"], dtype=np.float32)
            labels, distances = index.knn_query(vector, k=int(request.get("topK", K)), num_threads=1)
            matches = [{"id": str(int(i)), "score": float(s)} for i, s in zip(labels[0], distances[0])]
            self.answer(200, json.dumps({"result": {"count": len(matches), "matches": matches}}).encode())

        def log_message(self, *args):
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
    return 0


# ---------------------------------------------------------------------------------------------
# Report


def fmt(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def qps_at_recall(curve: list, recall: float, cpu: bool = False) -> tuple[float, str] | None:
    """The library's QPS at `recall`, interpolated linearly between the two swept points around
    it (None outside the swept range), and which points those were."""
    points = sorted(curve, key=lambda p: p.recall)
    value = (lambda p: p.median_cpu_qps) if cpu else (lambda p: p.median_qps)
    for low, high in zip(points, points[1:]):
        if low.recall <= recall <= high.recall and value(low) and value(high):
            if high.recall == low.recall:
                return value(high), f"ef {high.ef}"
            share = (recall - low.recall) / (high.recall - low.recall)
            return (value(low) + share * (value(high) - value(low)),
                    f"between ef {low.ef} (recall {low.recall:.4f}) and ef {high.ef} (recall {high.recall:.4f})")
    exact = [p for p in points if p.recall == recall and value(p)]
    return (value(exact[0]), f"ef {exact[0].ef}") if exact else None


def ratio_text(kiln_qps: float | None, peer: tuple[float, str] | None) -> str:
    if kiln_qps is None or peer is None:
        return "– (outside the peer's swept recall range)"
    return f"**{kiln_qps / peer[0]:.2f}×** (peer {peer[0]:,.0f} q/s, {peer[1]})"


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


def report(args, results: list, meta: dict) -> str:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Generated by `benches/vector_bench.py` on {now}.",
        "",
        f"- Command: `{args.command_line}`",
        f"- Machine: {machine_description()}; {cpu_model()}. Load average (1/5/15 min) at start: "
        f"{args.load_at_start}; at end: {load_average()}.",
        f"- Versions: Kiln {kiln_revision()} (release build; its own HNSW, `kiln_vectorize::hnsw`), Python "
        f"{platform.python_version()}, {versions()}. Peers: {args.install_note}.",
        f"- Data: **synthetic**, `kiln_vectorize::bench::clustered_vectors`: {args.count:,} base "
        f"vectors × {meta['dimensions']} dimensions in 100 Gaussian clusters (centres ~ N(0, 1), "
        "points = centre + N(0, 0.6²) per coordinate, L2-normalised for cosine, seed 7) and 1,000 "
        "queries from the same generator; ground truth = exact top-10 per query (recall_bench, "
        f"`{meta['recall_bench_header']}`, {meta['recall_bench_s']:.0f} s).",
        "- Recall@10 = share of each query's exact top-10 ids among the 10 returned. Every library "
        f"answers one query at a time on **one thread**; builds use all {os.cpu_count()} cores. "
        "In process: Kiln in a Rust loop (`recall_bench serve`: the graph proposes 20 candidates, "
        "rescored exactly in f64 from the f32 vectors, best 10 kept — what the store does); hnswlib "
        "and faiss in their C++ loop (one call with all 1,000 queries, `num_threads=1` / "
        "`omp_set_num_threads(1)`), hnswlib also with one Python call per query. The ef sweep ran "
        f"{args.rounds} times, interleaving the libraries at each ef; QPS = median over the rounds of "
        "queries / wall time of a pass (after warm-up queries); CPU q/s = queries per CPU-second of "
        "the querying thread (less disturbed by other load).",
        "- Over HTTP: one keep-alive connection from Python's http.client, one query at a time, "
        f"`{{vector, topK: {K}}}` (ids and scores back), the Kiln server and the hnswlib HTTP peer "
        f"alternating for {args.rounds} passes of 1,000 queries (median QPS; p50/p99 of the last "
        "pass). The client shares the CPUs with the server.",
        f"- Goal (issue 7): Kiln ≥ 1× hnswlib QPS at equal recall (recall ≥ {RECALL_TARGET}). "
        "\"At equal recall\" = hnswlib's QPS interpolated linearly between its two swept ef values "
        "whose recall brackets Kiln's.",
    ]
    for result in results:
        lines += ["", f"#### {result.metric}", ""]
        kiln_curve = result.curve("Kiln")
        default = next((p for p in kiln_curve if p.ef == result.kiln_default_ef), None)
        libs = [lib for lib in ("Kiln", "hnswlib", "hnswlib (Python loop)", "faiss") if result.curve(lib)]
        if libs:
            header = "| ef | " + " | ".join(f"{lib} recall | {lib} q/s (CPU q/s)" for lib in libs) + \
                " | Kiln / hnswlib at Kiln's recall |"
            lines += [header, "|" + "---|" * (2 + 2 * len(libs))]
            for ef in args.efs:
                cells = []
                for lib in libs:
                    p = result.points.get((lib, ef))
                    if p is None:
                        cells += ["–", "–"]
                        continue
                    cpu = f" ({fmt(p.median_cpu_qps)})" if p.median_cpu_qps else ""
                    bold = "**" if lib == "Kiln" and ef == result.kiln_default_ef else ""
                    cells += [f"{bold}{p.recall:.4f}{bold}", f"{bold}{fmt(p.median_qps)}{bold}{cpu}"]
                kp = result.points.get(("Kiln", ef))
                peer = qps_at_recall(result.curve("hnswlib"), kp.recall) if kp else None
                cells.append(f"{kp.median_qps / peer[0]:.2f}×" if kp and peer else "–")
                lines.append(f"| {ef}{' (Kiln default)' if ef == result.kiln_default_ef else ''} | " +
                             " | ".join(cells) + " |")
            lines.append("")
            builds = ", ".join(f"{lib} {s:.1f} s" for lib, s in result.builds.items())
            lines.append(f"- Build ({os.cpu_count()} cores, {args.count:,} vectors): {builds}; "
                         f"exact search (brute force, 1 thread): {fmt(result.exact_qps, 1)} q/s.")
        if default:
            for peer_name, label in (("hnswlib", "C++ loop"), ("hnswlib (Python loop)", "one Python call per query")):
                curve = result.curve(peer_name)
                if not curve:
                    continue
                wall = qps_at_recall(curve, default.recall)
                cpu = qps_at_recall(curve, default.recall, cpu=True)
                lines.append(
                    f"- Kiln in process at its default ef {default.ef} (recall {default.recall:.4f}, "
                    f"{default.median_qps:,.0f} q/s) / hnswlib ({label}) at equal recall: "
                    f"{ratio_text(default.median_qps, wall)}; per CPU-second: "
                    f"{ratio_text(default.median_cpu_qps, cpu)}")
        if result.http:
            lines += ["", "| over HTTP | configuration | recall@10 | QPS | p50 ms | p99 ms | load / build s | insert rate |",
                      "|---|---|---|---|---|---|---|---|"]
            for r in result.http:
                lines.append(f"| {r.library} | {r.config} | {fmt(r.recall, 4)} | {fmt(r.median_qps)} | "
                             f"{fmt(r.p50_ms, 3)} | {fmt(r.p99_ms, 3)} | {fmt(r.build_s, 1)} | {r.insert_rate} |")
            lines.append("")
            kiln_http = next((r for r in result.http if r.library == "Kiln HTTP" and r.median_qps), None)
            peer_http = next((r for r in result.http if r.library == "hnswlib HTTP" and r.median_qps), None)
            if kiln_http and peer_http:
                lines.append(f"- Kiln HTTP / hnswlib HTTP peer: **{kiln_http.median_qps / peer_http.median_qps:.2f}×** "
                             f"(recall {kiln_http.recall:.4f} vs {peer_http.recall:.4f})")
            if kiln_http:
                for peer_name, label in (("hnswlib", "in process, C++ loop"),
                                         ("hnswlib (Python loop)", "in process, one Python call per query")):
                    curve = result.curve(peer_name)
                    if curve:
                        lines.append(f"- Kiln HTTP / hnswlib ({label}) at equal recall: "
                                     f"{ratio_text(kiln_http.median_qps, qps_at_recall(curve, kiln_http.recall))}")
            for r in result.http:
                for note in r.notes:
                    lines.append(f"- {r.library}: {note}")
        for note in result.notes:
            lines.append(f"- {note}")
        for failure in result.failures:
            lines.append(f"- FAILED: {failure}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=100_000, help="base vectors (e.g. 20000 for a smoke run)")
    p.add_argument("--metrics", default=",".join(METRICS), help="comma-separated, of " + ", ".join(METRICS))
    p.add_argument("--http-metrics", help="metrics also measured through Kiln's HTTP API (default: --metrics)")
    p.add_argument("--efs", default="16,32,48,64,96,128,256", help="ef / efSearch values swept (every library)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved repetitions; the median is reported")
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
    if len(sys.argv) == 5 and sys.argv[1] == "--serve-hnswlib":
        return serve_hnswlib(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
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
    args.data_paths = {metric: Path(lines[0]["path"]) for metric, lines in parsed.items()}

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
        lines = parsed.get(metric)
        if not lines:
            result.failures.append("recall_bench printed no line for this metric")
            continue
        result.exact_qps = float(lines[0]["exact_qps"])
        path = Path(lines[0]["path"])
        data = load_dataset(path)
        meta["dimensions"] = data.base.shape[1]
        try:
            run_in_process(args, data, path, result)
        except Exception as error:  # noqa: BLE001 - reported, the run goes on
            result.failures.append(f"in process: {type(error).__name__}: {error}")
        if kiln_base and metric in args.http_metrics:
            print(f"bench: Kiln HTTP {metric}: inserting", file=sys.stderr)
            try:
                run_http(args, data, kiln_base, kiln, result)
            except (RuntimeError, OSError, http.client.HTTPException, KeyError, ValueError) as error:
                result.failures.append(f"HTTP: {type(error).__name__}: {error}")
        for failure in result.failures:
            print(f"bench: {metric}: FAILED: {failure}", file=sys.stderr)
        del data
        if not args.keep_data:  # the data file is no longer needed
            path.unlink(missing_ok=True)
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
