#!/usr/bin/env python3
"""How much the node adds to a request: the same load straight at a mock upstream and
through the node, in one run, on loopback.

Processes: this one (load generator and a local FakeWallet mint, started as a child),
a fast mock upstream (this script with ``--serve-upstream``, a child of its own) and
the node (``routstr-node run --config <tmp toml>``, a child of its own, so its CPU time
and RSS are its own). Every loop is bounded and stops by itself.

Figures (targets from the brief):
  added latency at concurrency 1, non-streaming:  p50 <= 0.5 ms, p99 <= 2 ms
  streaming first-byte overhead at concurrency 1:  <= 1 ms (p50)
  paid requests/s through one node process at concurrency 64:  >= 2,000
  node RSS idle <= 80 MB; with 1,000 open streams <= 250 MB
Then variant runs under cProfile and py-spy (if installed: pip install py-spy) print
where the node's time goes.

    .venv/bin/python scripts/bench_proxy.py [--requests 2000] [--rounds 5] [--streams 1000]
        [--profile cprofile|py-spy|both|none]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

import aiohttp
from aiohttp import web

LOOPBACK = "127.0.0.1"
MODEL = "bench"
HOLD_MODEL = "bench-hold"  # the upstream sends one chunk, then waits for /control/release
UPSTREAM_KEY = "sk-mock-upstream"
FUND_SAT = 1_000_000
CLK_TCK = os.sysconf("SC_CLK_TCK")
START_TIMEOUT_S = 60.0
PHASE_TIMEOUT_S = 300.0

# -- the mock upstream -----------------------------------------------------------------------

_CHAT = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": MODEL,
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello from the mock upstream."},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15},
}
CHAT_BODY = json.dumps(_CHAT, separators=(",", ":")).encode()


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def _chunk(content: str | None, finish: str | None = None) -> bytes:
    delta = {"content": content} if content is not None else {}
    return _event(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
    )


STREAM_EVENTS = [
    _chunk("Hello"),
    _chunk(" from"),
    _chunk(" the"),
    _chunk(" mock"),
    _chunk(" upstream."),
    _chunk(None, "stop"),
    _event(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": MODEL,
            "choices": [],
            "usage": {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14},
        }
    ),
    b"data: [DONE]\n\n",
]

RELEASE = web.AppKey("release", asyncio.Event)


async def _upstream_chat(request: web.Request) -> web.StreamResponse:
    if request.headers.get("Authorization") != f"Bearer {UPSTREAM_KEY}":
        return web.json_response({"error": {"message": "bad key"}}, status=401)
    body = json.loads(await request.read())
    if not body.get("stream"):
        return web.Response(body=CHAT_BODY, content_type="application/json")
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    events = STREAM_EVENTS
    if body.get("model") == HOLD_MODEL:
        await response.write(events[0])
        await request.app[RELEASE].wait()
        events = events[1:]
    for event in events:
        await response.write(event)
    await response.write_eof()
    return response


async def _upstream_control(request: web.Request) -> web.Response:
    release = request.app[RELEASE]
    if request.match_info["what"] == "release":
        release.set()
    else:
        release.clear()
    return web.Response(text="ok")


async def _upstream_health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _serve_until_signal(app: web.Application, port: int) -> None:
    """Serve ``app`` on loopback until SIGTERM or SIGINT."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, LOOPBACK, port, backlog=4096).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


async def serve_upstream(port: int) -> None:
    """The mock upstream, until SIGTERM."""
    app = web.Application()
    app[RELEASE] = asyncio.Event()
    app.router.add_post("/v1/chat/completions", _upstream_chat)
    app.router.add_post("/control/{what}", _upstream_control)
    app.router.add_get("/health", _upstream_health)
    await _serve_until_signal(app, port)


async def serve_bare_proxy(port: int, upstream_url: str) -> None:
    """The floor: a bare aiohttp pass-through (no payment, no JSON parsing), until SIGTERM.

    Forwards the body to the upstream on a pooled session and relays the answer (a
    stream chunk by chunk), so the node's figures can be read against what one
    aiohttp proxy hop costs on this machine.
    """
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    headers = {"Authorization": f"Bearer {UPSTREAM_KEY}", "Content-Type": "application/json"}

    async def forward(request: web.Request) -> web.StreamResponse:
        data = await request.read()
        async with session.post(
            upstream_url + "/chat/completions", data=data, headers=headers
        ) as up:
            if up.content_type != "text/event-stream":
                raw = await up.read()
                return web.Response(body=raw, status=up.status, content_type=up.content_type)
            response = web.StreamResponse(
                status=up.status, headers={"Content-Type": "text/event-stream"}
            )
            await response.prepare(request)
            async for chunk in up.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", forward)
    app.router.add_get("/health", _upstream_health)
    await _serve_until_signal(app, port)
    await session.close()


# -- child processes -------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


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


def spawn(name: str, argv: list[str], log: Path, url: str) -> Child:
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    return Child(name, process, url, log)


def node_toml(data_dir: Path, port: int, mint_url: str, upstream_url: str) -> str:
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
        for model in (MODEL, HOLD_MODEL)
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
{models}
[limits]
requests_per_minute = 100000000
requests_per_hour = 100000000
requests_per_day = 100000000
"""


def start_node(config: Path, port: int, log: Path, profile_to: Path | None = None) -> Child:
    script = str(Path(sys.executable).parent / "routstr-node")
    argv = [sys.executable]
    if profile_to is not None:
        argv += ["-m", "cProfile", "-o", str(profile_to)]
    argv += [script, "run", "--config", str(config)]
    return spawn("node", argv, log, f"http://{LOOPBACK}:{port}")


# -- load ------------------------------------------------------------------------------------


def body(model: str, stream: bool) -> bytes:
    payload: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "Say hello to the benchmark."}],
        "max_tokens": 16,
    }
    if stream:
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}
    return json.dumps(payload).encode()


@dataclass(frozen=True)
class Target:
    """Where a request goes: the upstream directly, or the node with the payer's key."""

    name: str
    url: str
    key: str

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}


class LoadError(RuntimeError):
    pass


async def plain_request(session: aiohttp.ClientSession, target: Target, data: bytes) -> float:
    """Seconds until the whole non-streaming answer was read."""
    started = time.perf_counter()
    async with session.post(target.url, data=data, headers=target.headers()) as resp:
        raw = await resp.read()
        if resp.status != 200:
            raise LoadError(f"{target.name}: {resp.status} {raw[:300]!r}")
    return time.perf_counter() - started


async def stream_request(session: aiohttp.ClientSession, target: Target, data: bytes) -> float:
    """Seconds until the first body byte of a stream (the stream is then read to its end)."""
    started = time.perf_counter()
    async with session.post(target.url, data=data, headers=target.headers()) as resp:
        if resp.status != 200:
            raise LoadError(f"{target.name}: {resp.status} {(await resp.read())[:300]!r}")
        first = await resp.content.readany()
        ttfb = time.perf_counter() - started
        rest = await resp.read()
    if not (first + rest).rstrip().endswith(b"data: [DONE]"):
        raise LoadError(f"{target.name}: stream did not end with [DONE]")
    return ttfb


Request = Callable[[aiohttp.ClientSession, Target, bytes], Awaitable[float]]


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def interleaved_latency(
    targets: list[Target], request: Request, data: bytes, n: int, warmup: int
) -> list[list[float]]:
    """Concurrency 1, taking turns between the targets so drift hits all alike."""
    samples: list[list[float]] = [[] for _ in targets]
    connector = aiohttp.TCPConnector(limit=len(targets))
    async with aiohttp.ClientSession(connector=connector) as session:
        for i in range(warmup + n):
            for j, target in enumerate(targets):
                seconds = await request(session, target, data)
                if i >= warmup:
                    samples[j].append(seconds)
    return samples


@dataclass
class Throughput:
    requests: int
    seconds: float
    cpu: dict[str, tuple[float, float]] = field(default_factory=dict)  # name -> (user, sys)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def cpu_ms(self, name: str) -> float:
        """CPU milliseconds (user + system) the process spent per request."""
        return sum(self.cpu[name]) / self.requests * 1000


async def throughput(
    target: Target,
    request: Request,
    data: bytes,
    n: int,
    concurrency: int,
    watch: dict[str, int],
) -> Throughput:
    """n requests by `concurrency` workers on one keep-alive session."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        # open the connections first
        await asyncio.gather(*(request(session, target, data) for _ in range(concurrency)))
        todo = iter(range(n))

        async def worker() -> None:
            for _ in todo:
                await request(session, target, data)

        watch = {**watch, "loadgen": os.getpid()}
        before = {name: cpu_times(pid) for name, pid in watch.items()}
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu = {}
        for name, pid in watch.items():
            (u0, s0), (u1, s1) = before[name], cpu_times(pid)
            cpu[name] = (u1 - u0, s1 - s0)
    return Throughput(n, elapsed, cpu)


async def _control(session: aiohttp.ClientSession, upstream_url: str, what: str) -> None:
    async with session.post(f"{upstream_url}/control/{what}") as resp:
        resp.raise_for_status()


@dataclass
class OpenStreams:
    opened: int
    completed: int
    rss_mb: float
    open_streams_metric: str
    seconds_to_open: float


async def open_streams(node: Child, target: Target, upstream_url: str, count: int) -> OpenStreams:
    """`count` streams that each got their first chunk and stay open; RSS; then finish them."""
    data = body(HOLD_MODEL, True)
    opened = 0
    all_open = asyncio.Event()
    gate = asyncio.Semaphore(100)  # at most 100 connections being opened at once
    timeout = aiohttp.ClientTimeout(total=PHASE_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=0)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
        aiohttp.ClientSession() as control,
    ):
        await _control(control, upstream_url, "reset")

        async def one() -> bool:
            nonlocal opened
            async with gate:
                resp = await session.post(target.url, data=data, headers=target.headers())
                if resp.status != 200:
                    raise LoadError(f"open stream: {resp.status} {(await resp.read())[:300]!r}")
                first = await resp.content.readany()
            opened += 1
            if opened == count:
                all_open.set()
            rest = await resp.read()
            resp.release()
            return bool(first) and (first + rest).rstrip().endswith(b"data: [DONE]")

        started = time.perf_counter()
        tasks = [asyncio.create_task(one()) for _ in range(count)]
        waiter = asyncio.create_task(all_open.wait())
        done, _ = await asyncio.wait(
            {waiter, *tasks}, timeout=PHASE_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
        )
        if waiter not in done:  # a held stream ended (or failed) before all were open
            waiter.cancel()
            failed = [repr(t.exception()) for t in done if t.exception()]
            for t in tasks:
                t.cancel()
            await _control(control, upstream_url, "release")
            raise LoadError(f"only {opened} of {count} streams opened; {failed[:1]}")
        seconds_to_open = time.perf_counter() - started
        await asyncio.sleep(0.5)  # let the node settle after the burst
        rss = rss_mb(node.pid)
        async with control.get(node.url + "/metrics") as resp:
            metrics = await resp.text()
        gauge = next(
            (line.split()[-1] for line in metrics.splitlines() if line.startswith("routstr_open")),
            "?",
        )
        await _control(control, upstream_url, "release")
        results = await asyncio.wait_for(asyncio.gather(*tasks), PHASE_TIMEOUT_S)
    return OpenStreams(opened, sum(results), rss, gauge, seconds_to_open)


# -- funding ---------------------------------------------------------------------------------


async def fund(node_url: str, mint_url: str) -> tuple[str, str]:
    """(payer key, kind): an sk- account if the node has /v1/wallet/create, else a token."""
    from mints.client import MintClient
    from routstr_node.demo.run import mint_token

    client = MintClient(mint_url)
    try:
        token = await mint_token(client, FUND_SAT)
    finally:
        await client.close()
    async with (
        aiohttp.ClientSession() as session,
        session.post(node_url + "/v1/wallet/create", json={"cashu_token": token}) as resp,
    ):
        if resp.status == 201:
            return str((await resp.json())["api_key"]), "sk- account (POST /v1/wallet/create)"
        if resp.status != 404:
            raise LoadError(f"/v1/wallet/create: {resp.status} {await resp.text()}")
    return token, "a cashuB token as the API key (no /v1/wallet/create on this node)"


# -- reporting -------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"


@dataclass
class Row:
    figure: str
    direct: str
    bare: str
    node: str
    added: str
    target: str
    verdict: str


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISS"


def print_table(rows: list[Row]) -> None:
    headings = Row("figure", "direct", "bare proxy", "via node", "node adds", "target", "")
    names = list(Row.__dataclass_fields__)
    table = [headings, *rows]
    widths = [max(len(getattr(r, f)) for r in table) for f in names]
    for i, row in enumerate(table):
        cells = [getattr(row, f) for f in names]
        line = "  ".join(
            c.ljust(w) if j in (0, len(names) - 1) else c.rjust(w)
            for j, (c, w) in enumerate(zip(cells, widths, strict=True))
        )
        print(line.rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


_PROJECT = ("/routstr_node/", "/wallet/", "/mints/")


def _where(filename: str, line: int, function: str) -> str:
    for marker in (*_PROJECT, "/site-packages/"):
        if marker in filename:
            filename = (
                filename.split(marker, 1)[1]
                if marker == "/site-packages/"
                else (marker.strip("/") + "/" + filename.split(marker, 1)[1])
            )
            break
    else:
        filename = Path(filename).name if filename.startswith("/") else filename
    return f"{filename}:{line}({function})"


def print_cprofile(path: Path, top: int) -> None:
    """cProfile sees the event-loop thread only; a coroutine's cumulative time counts
    from each resume, so for handlers it is CPU spent inside them, awaits excluded."""
    entries = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    rows = [
        (ct, tt, nc, _where(f, line, fn), f)
        for (f, line, fn), (_cc, nc, tt, ct, _callers) in entries.items()
    ]
    total = max(ct for ct, *_ in rows)
    print(f"\ncProfile, the node's own functions by cumulative time (of {total:.2f} s):")
    print(f"{'cumulative s':>12} {'own s':>8} {'calls':>8}  function")
    own = [r for r in rows if any(m in r[4] for m in _PROJECT)]
    for ct, tt, nc, where, _ in sorted(own, reverse=True)[:top]:
        print(f"{ct:12.3f} {tt:8.3f} {nc:8d}  {where}")
    print(f"\ncProfile, top {top} by own time (everything on the event-loop thread):")
    print(f"{'own s':>8} {'cumulative s':>12} {'calls':>8}  function")
    for ct, tt, nc, where, _ in sorted(rows, key=lambda r: r[1], reverse=True)[:top]:
        print(f"{tt:8.3f} {ct:12.3f} {nc:8d}  {where}")


def _frame_key(frame: str) -> str:
    """`fn (path/file.py:123)` → `file (fn)` without the line (one entry per function)."""
    name, _, place = frame.partition(" (")
    place = place.rstrip(")").rsplit(":", 1)[0]
    for marker in (*_PROJECT, "site-packages/"):
        if marker.lstrip("/") in place:
            place = marker.strip("/") + "/" + place.split(marker.lstrip("/"), 1)[1]
            if marker == "site-packages/":
                place = place.split("/", 1)[1]
            break
    return f"{place} ({name})"


def print_pyspy(path: Path, top: int) -> None:
    """py-spy --gil samples whichever thread holds the GIL: the Python work of the event
    loop and of sqlite's threads (sqlite's own C code runs without the GIL, unseen)."""
    self_n: dict[str, int] = {}
    incl: dict[str, int] = {}
    threads: dict[str, int] = {}
    total = imports = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        if "_find_and_load" in stack:
            imports += count  # start-up: importing modules
            continue
        total += count
        thread, *frames = stack.split(";")
        keys = [_frame_key(f) for f in frames]
        if any("aiosqlite" in k for k in keys):
            group = "sqlite threads (aiosqlite)"
        elif "MainThread" in thread:
            group = "event loop (main thread)"
        else:
            group = "other threads"
        threads[group] = threads.get(group, 0) + count
        if keys:
            self_n[keys[-1]] = self_n.get(keys[-1], 0) + count
        for key in set(keys):
            incl[key] = incl.get(key, 0) + count
    if not total:
        print("(py-spy wrote no samples)")
        return
    print(f"\npy-spy: {total} samples of the GIL holder ({imports} more while importing, left out)")
    print("share by thread:")
    for group, n in sorted(threads.items(), key=lambda kv: -kv[1]):
        print(f"  {100 * n / total:5.1f}%  {group}")
    print(f"\npy-spy, top {top} by inclusive samples (the node's own functions):")
    own = [(n, k) for k, n in incl.items() if k.startswith(("routstr_node/", "wallet/", "mints/"))]
    for n, key in sorted(own, reverse=True)[:top]:
        print(f"  {100 * n / total:5.1f}%  {key}")
    print(f"\npy-spy, top {top} by own samples (any code, any thread):")
    for key, n in sorted(self_n.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {100 * n / total:5.1f}%  {key}")


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Measured:
    latency: list[list[float]]  # direct, bare, node
    first_byte: list[list[float]]
    throughput: dict[tuple[str, str], list[Throughput]]  # (target, "plain"|"stream") -> rounds
    rss_idle_start: float
    rss_idle_after: float
    held: OpenStreams
    rss_after_streams: float
    rss_peak: float


async def bench(args: argparse.Namespace) -> None:
    from routstr_node.demo.mint import run_local_mint

    with tempfile.TemporaryDirectory(prefix="routstr-bench-") as tmp:
        work = Path(tmp)
        up_port, bare_port, node_port = free_port(), free_port(), free_port()
        upstream = spawn(
            "upstream",
            [sys.executable, __file__, "--serve-upstream", str(up_port)],
            work / "upstream.log",
            f"http://{LOOPBACK}:{up_port}",
        )
        children = [upstream]
        try:
            await wait_healthy(upstream, "/health")
            bare = spawn(
                "bare proxy",
                [sys.executable, __file__, "--serve-bare", str(bare_port), upstream.url + "/v1"],
                work / "bare.log",
                f"http://{LOOPBACK}:{bare_port}",
            )
            children.append(bare)
            await wait_healthy(bare, "/health")
            async with run_local_mint(work / "mint") as mint:
                config = work / "node.toml"
                config.write_text(
                    node_toml(work / "node-data", node_port, mint.url, upstream.url + "/v1")
                )
                node = start_node(config, node_port, work / "node.log")
                children.append(node)
                await wait_healthy(node, "/health")
                await asyncio.sleep(1.0)
                rss_idle_start = rss_mb(node.pid)
                key, payer = await fund(node.url, mint.url)
                path = "/v1/chat/completions"
                targets = [
                    Target("direct", upstream.url + path, UPSTREAM_KEY),
                    Target("bare", bare.url + path, UPSTREAM_KEY),
                    Target("node", node.url + path, key),
                ]
                print(f"payer: {payer}; {args.requests} requests per measurement")
                print(f"{os.cpu_count()} CPUs; load average before: {os.getloadavg()[0]:.2f}")
                measured = await measure(
                    args, targets, node, upstream, bare, rss_idle_start, flush=True
                )
                node.stop()
                report(measured, args.streams, args.concurrency)
                print(f"load average after: {os.getloadavg()[0]:.2f}")
                for profiler in ("cprofile", "py-spy"):
                    if args.profile in (profiler, "both"):
                        await profile_run(profiler, config, node_port, work, targets[2], args)
        finally:
            for child in reversed(children):
                child.stop()


async def measure(
    args: argparse.Namespace,
    targets: list[Target],
    node: Child,
    upstream: Child,
    bare: Child,
    rss_idle_start: float,
    *,
    flush: bool,
) -> Measured:
    n = args.requests
    plain, streamed = body(MODEL, False), body(MODEL, True)
    print("latency, concurrency 1, non-streaming …", flush=flush)
    latency = await interleaved_latency(targets, plain_request, plain, n, warmup=200)
    print("first byte, concurrency 1, streaming …", flush=flush)
    first_byte = await interleaved_latency(targets, stream_request, streamed, n, warmup=200)
    print(f"throughput, concurrency {args.concurrency} …", flush=flush)
    watch = {"node": node.pid, "upstream": upstream.pid, "bare": bare.pid}
    tp: dict[tuple[str, str], list[Throughput]] = {}
    # this machine's speed drifts by tens of percent within seconds: rounds, each target's
    # turn rotated, and the medians reported, so drift hits direct, bare and node alike
    for turn in range(args.rounds):
        for kind, request, data in (
            ("plain", plain_request, plain),
            ("stream", stream_request, streamed),
        ):
            for target in targets[turn % 3 :] + targets[: turn % 3]:
                run = await throughput(target, request, data, n, args.concurrency, watch)
                tp.setdefault((target.name, kind), []).append(run)
    await asyncio.sleep(1.0)
    rss_idle_after = rss_mb(node.pid)
    print(f"{args.streams} open streams …", flush=flush)
    held = await open_streams(node, targets[2], upstream.url, args.streams)
    await asyncio.sleep(1.0)
    return Measured(
        latency,
        first_byte,
        tp,
        rss_idle_start,
        rss_idle_after,
        held,
        rss_mb(node.pid),
        rss_mb(node.pid, "VmHWM"),
    )


def report(m: Measured, streams: int, concurrency: int) -> None:
    rows: list[Row] = []
    for label, samples, limits in (
        ("latency c=1", m.latency, {"p50": 0.0005, "p99": 0.002}),
        ("stream first byte c=1", m.first_byte, {"p50": 0.001, "p99": None}),
    ):
        for name, q in (("p50", 0.5), ("p99", 0.99)):
            d, b, v = (percentile(s, q) for s in samples)
            limit = limits[name]
            rows.append(
                Row(
                    f"{label} {name} (ms)",
                    ms(d),
                    ms(b),
                    ms(v),
                    ms(v - d),
                    f"<= {limit * 1000:g}" if limit is not None else "",
                    verdict(v - d <= limit) if limit is not None else "",
                )
            )
    for kind, label in (("plain", "non-streaming"), ("stream", "streaming")):
        td, tb, tv = (m.throughput[(t, kind)] for t in ("direct", "bare", "node"))
        node_rps = [t.rps for t in tv]
        rows.append(
            Row(
                f"throughput c={concurrency} {label} (req/s)",
                f"{median(t.rps for t in td):,.0f}",
                f"{median(t.rps for t in tb):,.0f}",
                f"{median(node_rps):,.0f}",
                "",
                ">= 2,000",
                verdict(median(node_rps) >= 2000)
                + f"  (node, {len(tv)} rounds: {min(node_rps):,.0f}-{max(node_rps):,.0f})",
            )
        )
        cpu_b, cpu_v = median(t.cpu_ms("bare") for t in tb), median(t.cpu_ms("node") for t in tv)
        rows.append(
            Row(
                f"  proxy CPU per {label} request (ms)",
                "",
                f"{cpu_b:.3f}",
                f"{cpu_v:.3f}",
                "",
                "",
                f"node: {1000 / cpu_v:,.0f}/s per core (bare {1000 / cpu_b:,.0f})",
            )
        )
    rows += [
        Row("node RSS idle after start (MB)", "", "", f"{m.rss_idle_start:.1f}", "", "<= 80",
            verdict(m.rss_idle_start <= 80)),
        Row("node RSS idle after the load (MB)", "", "", f"{m.rss_idle_after:.1f}", "", "<= 80",
            verdict(m.rss_idle_after <= 80)),
        Row(f"node RSS, {m.held.opened} open streams (MB)", "", "", f"{m.held.rss_mb:.1f}",
            f"+{m.held.rss_mb - m.rss_idle_after:.1f}", "<= 250",
            verdict(m.held.rss_mb <= 250 and m.held.opened == streams)),
    ]  # fmt: skip
    print()
    print_table(rows)
    print()
    held = m.held
    print(
        f"open streams: {held.opened} opened in {held.seconds_to_open:.1f} s (the node's "
        f"routstr_open_streams gauge: {held.open_streams_metric}); {held.completed} ended with "
        f"[DONE] after release; RSS after they closed {m.rss_after_streams:.1f} MB, "
        f"peak (VmHWM) {m.rss_peak:.1f} MB"
    )
    print(
        "CPU seconds (user + system) in the median round of each throughput run,"
        " 2 cores shared by all processes:"
    )
    for (name, kind), runs in m.throughput.items():
        t = sorted(runs, key=lambda run: run.rps)[len(runs) // 2]
        parts = ", ".join(
            f"{p} {u:.2f}+{sy:.2f}" for p, (u, sy) in t.cpu.items() if u + sy > 0 or p == name
        )
        print(f"  {name:6} {kind:6} {t.requests} req in {t.seconds:5.2f} s: {parts}")


# `python -c BOOT out.prof routstr-node run …`: the node under cProfile, imports done
# before profiling starts, so the profile holds start-up and serving only.
_CPROFILE_BOOT = """
import cProfile, sys
import routstr_node.app, routstr_node.server
from routstr_node.cli import main
out = sys.argv[1]
sys.argv = sys.argv[2:]
profile = cProfile.Profile()
profile.enable()
try:
    main()
finally:
    profile.disable()
    profile.dump_stats(out)
"""


def pyspy_executable() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


async def profile_run(
    profiler: str, config: Path, port: int, work: Path, via: Target, args: argparse.Namespace
) -> None:
    """The same node, same data and payer, under a profiler: throughput load, top entries."""
    print(f"\nprofile: the node again under {profiler} (slower) …", flush=True)
    out = work / f"node.{profiler}"
    script = str(Path(sys.executable).parent / "routstr-node")
    node_argv = [sys.executable, script, "run", "--config", str(config)]
    if profiler == "cprofile":
        argv = [sys.executable, "-c", _CPROFILE_BOOT, str(out), *node_argv[1:]]
    else:
        spy = pyspy_executable()
        if spy is None:
            print("(py-spy is not installed: pip install py-spy)")
            return
        argv = [spy, "record", "-r", "250", "--gil", "--threads", "-f", "raw", "-o", str(out)]
        argv.append("--")
        argv += node_argv
    wrapper = spawn("node", argv, work / f"node-{profiler}.log", f"http://{LOOPBACK}:{port}")
    try:
        await wait_healthy(wrapper, "/health")
        node_pid = wrapper.pid if profiler == "cprofile" else child_pids(wrapper.pid)[0]
        watch = {"node": node_pid}
        n, c = args.requests, args.concurrency
        plain = await throughput(via, plain_request, body(MODEL, False), n, c, watch)
        streamed = await throughput(via, stream_request, body(MODEL, True), n // 2, c, watch)
        print(f"under the profiler: {plain.rps:,.0f} plain req/s, {streamed.rps:,.0f} streams/s")
        os.kill(node_pid, signal.SIGTERM)  # each profiler writes its file as the node exits
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(wrapper.process.wait, 60)
    finally:
        wrapper.stop()
    if not out.exists():
        print(f"(no profile written; see {wrapper.log})")
    elif profiler == "cprofile":
        print_cprofile(out, 25)
    else:
        print_pyspy(out, 25)


def child_pids(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    if not found:
        raise RuntimeError(f"process {pid} has no child")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=2000, help="requests per measurement")
    parser.add_argument("--streams", type=int, default=1000, help="streams held open at once")
    parser.add_argument(
        "--profile",
        choices=("cprofile", "py-spy", "both", "none"),
        default="both",
        help="profile a variant run of the node (py-spy: all threads, if installed)",
    )
    parser.add_argument("--concurrency", type=int, default=64, help="for the throughput runs")
    parser.add_argument("--rounds", type=int, default=5, help="throughput rounds (medians)")
    parser.add_argument("--serve-upstream", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--serve-bare", nargs=2, metavar=("PORT", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_upstream:
        asyncio.run(serve_upstream(args.serve_upstream))
        return
    if args.serve_bare:
        asyncio.run(serve_bare_proxy(int(args.serve_bare[0]), args.serve_bare[1]))
        return
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()
