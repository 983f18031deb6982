"""What the benchmark harnesses (llm, gateway, vector and speech) share: server processes in their
own process groups (started, waited on until healthy, killed on exit), free ports, CPU accounting
from /proc, a line describing the machine and the commit measured. Standard library only.

The harnesses run as `python benches/<script>.py` and import this module from their own folder.
"""

from __future__ import annotations

import atexit
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

CACHE_DIR = Path.home() / ".cache" / "kiln"
REPO_DIR = Path(__file__).resolve().parent.parent
DEFAULT_LOG_DIR = CACHE_DIR / "bench-logs"


def default_kiln_bin() -> str:
    """The release binary `cargo build --release` (scripts/bench) leaves in CARGO_TARGET_DIR."""
    target = os.environ.get("CARGO_TARGET_DIR", str(CACHE_DIR / "target"))
    return f"{target}/release/kiln"


# ---------------------------------------------------------------------------------------------
# Processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A server process in its own process group, killed on exit whatever happens."""

    running: list["Server"] = []

    def __init__(self, name: str, argv: list[str], port: int, ready_path: str, log_path: Path,
                 startup_timeout_s: float, env: dict | None = None, cwd: Path | None = None):
        self.name, self.argv, self.port, self.ready_path = name, argv, port, ready_path
        self.log_path, self.startup_timeout_s = log_path, startup_timeout_s
        self.env, self.cwd = env, cwd
        self.process: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def command(self) -> str:
        """The command line, shell-quoted, led by the environment it adds or changes."""
        prefix = [f"{k}={v}" for k, v in (self.env or {}).items() if os.environ.get(k) != v]
        return " ".join(shlex.quote(a) for a in prefix + self.argv)

    def start(self) -> None:
        """Starts the process and waits until `ready_path` answers 200 (or it exits, or time runs out)."""
        env = dict(os.environ, **(self.env or {}))
        with open(self.log_path, "wb") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env=env, cwd=self.cwd,
            )
        Server.running.append(self)
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(self.base + self.ready_path, timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} not ready after {self.startup_timeout_s}s; see {self.log_path}")

    def cpu_seconds(self) -> float | None:
        """User + system CPU of every live process in the server's process group."""
        if self.process is None:
            return None
        return process_group_cpu_seconds(self.process.pid)

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)
        except ProcessLookupError:
            pass
        if self in Server.running:
            Server.running.remove(self)


def stop_all_servers(*_args) -> None:
    for server in list(Server.running):
        server.stop()


def stop_servers_on_exit() -> None:
    """Stops every started server when the harness exits, also on SIGINT, SIGTERM and SIGHUP."""
    atexit.register(stop_all_servers)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: sys.exit(130))


# ---------------------------------------------------------------------------------------------
# CPU accounting and the machine


def _stat_fields(stat: Path) -> list[str]:
    """/proc/<pid>/stat after the command name: state ppid pgrp session … utime(11) stime(12)."""
    return stat.read_text().rsplit(")", 1)[1].split()


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU of one process, or None once it is gone."""
    try:
        fields = _stat_fields(Path(f"/proc/{pid}/stat"))
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_group_cpu_seconds(pgid: int) -> float:
    """User + system CPU of every live process in process group `pgid`."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = _stat_fields(stat)
        except OSError:  # exited meanwhile
            continue
        if int(fields[2]) == pgid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def load_average() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def machine_description() -> str:
    """E.g. `x86_64, 16 logical CPUs, Linux-6.1.0-…-x86_64-with-glibc2.36`."""
    return f"{platform.machine()}, {os.cpu_count()} logical CPUs, {platform.platform()}"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def kiln_revision() -> str:
    """The checkout's commit, noting uncommitted changes under crates/."""
    try:
        out = subprocess.run(["git", "-C", str(REPO_DIR), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO_DIR), "status", "--porcelain", "crates"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return f"{out}{' (crates/ modified)' if dirty else ''}" if out else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
