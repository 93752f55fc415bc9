"""Load: requests at concurrency 1 and N, open streams held, and a funded payer."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from proxybench import HOLD_MODEL
from proxybench.processes import Child, cpu_times, rss_mb

FUND_SAT = 1_000_000
PHASE_TIMEOUT_S = 300.0


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


async def fund(node_url: str, mint_url: str, sat: int = FUND_SAT) -> tuple[str, str]:
    """(payer key, kind): an sk- account if the node has /v1/wallet/create, else a token."""
    from mints.client import MintClient
    from routstr_node.demo.run import mint_token

    client = MintClient(mint_url)
    try:
        token = await mint_token(client, sat)
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
