"""Long answers: SSE events per second relayed (node against the bare proxy), and the
node's memory per open stream as its answer grows from 1 event to 10,000."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from statistics import median

import aiohttp

from proxybench import HOLD_MODEL, LONG_EVENTS, LONG_MODEL, SSE_EVENTS, SSE_MODEL
from proxybench.load import PHASE_TIMEOUT_S, LoadError, Target, body
from proxybench.processes import Child, cpu_seconds, rss_mb

CONCURRENCY = 16


@dataclass
class EventRate:
    events_per_s: list[float]  # one per round
    cpu_us_per_event: list[float]


async def _whole_stream(session: aiohttp.ClientSession, target: Target, data: bytes) -> int:
    """Read one streamed answer to its end; the events it held."""
    async with session.post(target.url, data=data, headers=target.headers()) as resp:
        raw = await resp.read()
        if resp.status != 200:
            raise LoadError(f"{target.name}: {resp.status} {raw[:300]!r}")
    return raw.count(b"data:")


async def event_rates(
    targets: list[Target], pids: dict[str, int], requests: int, rounds: int
) -> dict[str, EventRate]:
    """Streams of SSE_EVENTS events at CONCURRENCY, target turns interleaved per round."""
    data = body(SSE_MODEL, True)
    rates = {t.name: EventRate([], []) for t in targets}
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:
        for turn in range(rounds):
            for target in targets[turn % len(targets) :] + targets[: turn % len(targets)]:
                await asyncio.gather(*(_whole_stream(session, target, data) for _ in range(4)))
                todo = iter(range(requests))

                async def worker(target: Target, todo: Iterator[int]) -> int:
                    return sum([await _whole_stream(session, target, data) for _ in todo])

                cpu = cpu_seconds(pids[target.name])
                started = time.perf_counter()
                counts = await asyncio.gather(*(worker(target, todo) for _ in range(CONCURRENCY)))
                events = sum(counts)
                elapsed = time.perf_counter() - started
                relayed = requests * SSE_EVENTS
                if events < relayed:
                    raise LoadError(f"{target.name}: {events} events of {relayed}")
                rates[target.name].events_per_s.append(relayed / elapsed)
                spent = cpu_seconds(pids[target.name]) - cpu
                rates[target.name].cpu_us_per_event.append(spent / relayed * 1e6)
    return rates


async def marginal_event_cpu(
    targets: list[Target], pids: dict[str, int], upstream_url: str, requests: int = 24
) -> dict[str, float]:
    """CPU µs per relayed event in LONG_EVENTS-event answers: what an event itself costs,
    the per-request work spread over 10,000 events (all threads of each proxy)."""
    data = body(LONG_MODEL, True)
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{upstream_url}/control/release") as resp:
            resp.raise_for_status()  # long answers run to their end
        spent: dict[str, float] = {}
        for target in targets:
            await _whole_stream(session, target, data)
            cpu = cpu_seconds(pids[target.name])
            for _ in range(requests // 4):
                counts = await asyncio.gather(
                    *(_whole_stream(session, target, data) for _ in range(4))
                )
                if min(counts) < LONG_EVENTS:
                    raise LoadError(f"{target.name}: {min(counts)} events of {LONG_EVENTS}")
            spent[target.name] = (
                (cpu_seconds(pids[target.name]) - cpu) / (requests // 4 * 4 * LONG_EVENTS) * 1e6
            )
        async with session.post(f"{upstream_url}/control/reset") as resp:
            resp.raise_for_status()
    return spent


async def rss_per_stream(
    node: Child, target: Target, upstream_url: str, count: int, *, long: bool
) -> float:
    """KB of node RSS per open stream held after LONG_EVENTS events of its answer (after
    one: ``long`` False), ``count`` of them open at once."""
    model, events = (LONG_MODEL, LONG_EVENTS) if long else (HOLD_MODEL, 1)
    timeout = aiohttp.ClientTimeout(total=PHASE_TIMEOUT_S)
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as s,
        aiohttp.ClientSession() as control,
    ):
        async with control.post(f"{upstream_url}/control/reset") as resp:
            resp.raise_for_status()
        await asyncio.sleep(0.5)
        before = rss_mb(node.pid)
        held = asyncio.Event()
        reached = 0

        async def one(data: bytes, events: int) -> None:
            nonlocal reached
            async with s.post(target.url, data=data, headers=target.headers()) as resp:
                if resp.status != 200:
                    raise LoadError(f"{resp.status} {(await resp.read())[:200]!r}")
                seen = 0
                async for chunk in resp.content.iter_any():
                    seen += chunk.count(b"data:")
                    if seen >= events and not held.is_set():
                        reached += 1
                        if reached == count:
                            held.set()
                        await held.wait()

        data = body(model, True)
        streams = [asyncio.create_task(one(data, events)) for _ in range(count)]
        await asyncio.wait_for(held.wait(), PHASE_TIMEOUT_S)
        await asyncio.sleep(0.5)
        during = rss_mb(node.pid)
        async with control.post(f"{upstream_url}/control/release") as resp:
            resp.raise_for_status()
        await asyncio.wait_for(asyncio.gather(*streams), PHASE_TIMEOUT_S)
    return (during - before) * 1024 / count


def report_sse(
    rates: dict[str, EventRate],
    long_kb: float,
    short_kb: float,
    held: int,
    marginal: dict[str, float],
) -> None:
    bare, node = rates["bare"], rates["node"]
    b, n = median(bare.events_per_s), median(node.events_per_s)
    print(
        f"SSE events/s, {SSE_EVENTS}-event answers, c={CONCURRENCY}, {len(node.events_per_s)}"
        f" rounds: bare {b:,.0f} ({min(bare.events_per_s):,.0f}-{max(bare.events_per_s):,.0f}),"
        f" node {n:,.0f} ({min(node.events_per_s):,.0f}-{max(node.events_per_s):,.0f}):"
        f" {n / b:.2f}x the bare proxy (target >= 0.7x)"
    )
    print(
        f"  CPU per relayed event: bare {median(bare.cpu_us_per_event):.2f} us,"
        f" node {median(node.cpu_us_per_event):.2f} us"
    )
    print(
        f"  CPU per relayed event in {LONG_EVENTS:,}-event answers (per-request work spread"
        f" thin): bare {marginal['bare']:.2f} us, node {marginal['node']:.2f} us"
        f" (target node <= 2 us)"
    )
    print(
        f"node RSS per open stream, {held} held: {short_kb:.1f} KB after 1 event,"
        f" {long_kb:.1f} KB after {LONG_EVENTS:,} events"
    )
