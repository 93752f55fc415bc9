"""The benchmark's child processes: spawning, health, CPU time and RSS, the node's config."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from proxybench import (
    FAIL_MODEL,
    FAILOVER_MODEL,
    HOLD_MODEL,
    LONG_MODEL,
    LOOPBACK,
    MODEL,
    ROUTED_MODEL,
    SSE_MODEL,
    UPSTREAM_KEY,
)

CLK_TCK = os.sysconf("SC_CLK_TCK")
START_TIMEOUT_S = 60.0


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process, all its threads, and of its children (the
    serving processes of ``run --workers N``)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    user = system = 0.0
    for one in (pid, *(int(c) for c in children)):
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11]) / CLK_TCK
        system += int(fields[12]) / CLK_TCK
    return user, system


def cpu_seconds(pid: int) -> float:
    user, system = cpu_times(pid)
    return user + system


def rss_mb(pid: int, key: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} for pid {pid}")


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


async def wait_healthy(child: Child, path: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    timeout = aiohttp.ClientTimeout(total=2)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            if child.process.poll() is not None:
                tail = child.log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{child.name} exited at start:\n{tail}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(child.url + path) as resp:
                    if resp.status == 200:
                        return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{child.name} not ready after {START_TIMEOUT_S} s")
            await asyncio.sleep(0.05)


def spawn(
    name: str, argv: list[str], log: Path, url: str, env: dict[str, str] | None = None
) -> Child:
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env
        )
    return Child(name, process, url, log)


def _provider(upstream: str, upstream_model: str, input_sat: int) -> str:
    return f"""
  [[models.providers]]
  upstream = "{upstream}"
  upstream_model = "{upstream_model}"
  input_sat_per_1m = {input_sat}
  output_sat_per_1m = 400
"""


def node_toml(
    data_dir: Path,
    port: int,
    mint_url: str,
    upstream_url: str,
    *,
    records: bool = True,
    database_url: str = "",
) -> str:
    """One-provider models, and for routing: a model with three providers (three
    upstream entries, so three sessions, in front of the same mock) and one whose first
    provider ("failing") answers 500. ``records``: the node keeps usage records."""
    routed = f"""
[[models]]
id = "{ROUTED_MODEL}"
context_length = 8192
max_output_tokens = 256
{_provider("mock", MODEL, 300)}{_provider("mock2", MODEL, 100)}{_provider("mock3", MODEL, 200)}
[[models]]
id = "{FAILOVER_MODEL}"
context_length = 8192
max_output_tokens = 256
{_provider("failing", FAIL_MODEL, 100)}{_provider("mock2", MODEL, 100)}"""
    extra_upstreams = "".join(
        f"""
[[upstreams]]
name = "{name}"
base_url = "{upstream_url}"
api_key = "{UPSTREAM_KEY}"
timeout_s = 120
"""
        for name in ("mock2", "mock3", "failing")
    )
    models = "".join(
        f"""
[[models]]
id = "{model}"
upstream = "mock"
input_sat_per_1m = 100
output_sat_per_1m = 400
context_length = 8192
max_output_tokens = 256
"""
        for model in (MODEL, HOLD_MODEL, SSE_MODEL, LONG_MODEL)
    )
    return f"""
[node]
name = "bench"
host = "{LOOPBACK}"
port = {port}
data_dir = "{data_dir}"

[mints]
trusted = ["{mint_url}"]

[pricing]
btc_usd = 100000
price_sources = []

[[upstreams]]
name = "mock"
base_url = "{upstream_url}"
api_key = "{UPSTREAM_KEY}"
timeout_s = 120
{extra_upstreams}{models}{routed}
[logs]
usage_records = {"true" if records else "false"}

[limits]
requests_per_minute = 100000000
requests_per_hour = 100000000
requests_per_day = 100000000

[database]
url = "{database_url}"
"""


def start_node(
    config: Path,
    port: int,
    log: Path,
    profile_to: Path | None = None,
    *,
    memwatch: bool = False,
    allocator: str | None = None,
    workers: int = 1,
) -> Child:
    script = str(Path(sys.executable).parent / "routstr-node")
    argv = [sys.executable]
    if profile_to is not None:
        argv += ["-m", "cProfile", "-o", str(profile_to)]
    elif memwatch:  # memory evidence: see proxybench/memwatch.py
        argv += [str(Path(__file__).with_name("memwatch.py"))]
    argv += [script, "run", "--config", str(config)]
    if workers > 1:  # a supervisor and its serving processes (PostgreSQL)
        argv += ["--workers", str(workers)]
    env = dict(os.environ)
    if allocator is not None:
        env["PYTHONMALLOC"] = allocator
    return spawn("node", argv, log, f"http://{LOOPBACK}:{port}", env)
