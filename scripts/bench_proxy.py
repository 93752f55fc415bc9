#!/usr/bin/env python3
"""How much the node adds to a request: the same load straight at a mock upstream and
through the node, in one run, on loopback.

Processes: this one (load generator and a local FakeWallet mint, started as a child),
a fast mock upstream (this script with ``--serve-upstream``, a child of its own), two
floors to read the node against (a raw TCP relay and a bare aiohttp proxy) and the
node (``routstr-node run --config <tmp toml>``, a child of its own, so its CPU time
and RSS are its own). Every loop is bounded and stops by itself.

Figures (targets from the brief):
  added latency at concurrency 1, non-streaming:  p50 <= 0.5 ms, p99 <= 2 ms
  streaming first-byte overhead at concurrency 1:  <= 1 ms (p50)
  paid requests/s through one node process at concurrency 64:  >= 2,000
  node RSS idle <= 80 MB; with 1,000 open streams <= 250 MB
Routing (a model with three providers, and a failover), from scripts/proxybench/routing.py:
  choosing among three providers adds at most 50 us per request
  a failover adds nothing beyond the failed attempt's own time
Then variant runs under cProfile and py-spy (if installed: pip install py-spy) print
where the node's time goes.

    .venv/bin/python scripts/bench_proxy.py [--requests 2000] [--rounds 5] [--streams 1000]
        [--profile cprofile|py-spy|both|none] [--only all|routing] [--records on|off]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from statistics import median

from proxybench import LOOPBACK, MODEL, UPSTREAM_KEY
from proxybench.load import (
    OpenStreams,
    Target,
    Throughput,
    body,
    fund,
    interleaved_latency,
    open_streams,
    percentile,
    plain_request,
    stream_request,
    throughput,
)
from proxybench.mock import serve_bare_proxy, serve_tcp_relay, serve_upstream
from proxybench.processes import (
    Child,
    cpu_seconds,
    free_port,
    node_toml,
    rss_mb,
    spawn,
    start_node,
    wait_healthy,
)
from proxybench.report import Row, ms, print_table, profile_run, verdict
from proxybench.routing import measure_routing, report_routing, time_choice
from proxybench.sse import (
    EventRate,
    event_rates,
    marginal_event_cpu,
    report_sse,
    rss_per_stream,
)

from routstr_node.memory import TRIM_EVERY_S
from routstr_node.upstream import UPSTREAM_KEEPALIVE_S

LONG_STREAMS_HELD = 50


@dataclass
class Measured:
    latency: list[list[float]]  # direct, relay, bare, node
    first_byte: list[list[float]]
    cpu_c1: dict[tuple[str, str], float]  # (bare|node, "plain"|"stream") -> CPU s per request
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
        up_port, relay_port, bare_port, node_port = (free_port() for _ in range(4))
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
            relay = spawn(
                "tcp relay",
                [sys.executable, __file__, "--serve-relay", str(relay_port), str(up_port)],
                work / "relay.log",
                f"http://{LOOPBACK}:{relay_port}",
            )
            children.append(relay)
            await wait_healthy(relay, "/health")
            async with run_local_mint(work / "mint") as mint:
                config = work / "node.toml"
                config.write_text(
                    node_toml(
                        work / "node-data",
                        node_port,
                        mint.url,
                        upstream.url + "/v1",
                        records=args.records == "on",
                        database_url=args.database_url,
                    )
                )
                node = start_node(
                    config,
                    node_port,
                    work / "node.log",
                    memwatch=args.memory_evidence,
                    allocator=args.node_malloc,
                    workers=args.workers,
                )
                args.memory_lines_seen = 0
                children.append(node)
                await wait_healthy(node, "/health")
                await asyncio.sleep(1.0)
                rss_idle_start = rss_mb(node.pid)
                key, payer = await fund(node.url, mint.url)
                path = "/v1/chat/completions"
                targets = [
                    Target("direct", upstream.url + path, UPSTREAM_KEY),
                    Target("relay", relay.url + path, UPSTREAM_KEY),
                    Target("bare", bare.url + path, UPSTREAM_KEY),
                    Target("node", node.url + path, key),
                ]
                print(f"payer: {payer}; {args.requests} requests per measurement")
                print(f"usage records: {args.records}")
                print(f"{os.cpu_count()} CPUs; load average before: {os.getloadavg()[0]:.2f}")
                measured = None
                if args.only == "all":
                    measured = await measure(
                        args, targets, node, upstream, bare, rss_idle_start, flush=True
                    )
                sse = None
                if args.only in ("all", "sse"):
                    sse = await measure_sse(args, targets, node, upstream, bare)
                print("routing: latency, concurrency 1, non-streaming …", flush=True)
                routing = await measure_routing(
                    node.url, upstream.url, key, args.requests, warmup=200
                )
                node.stop()
                if measured is not None:
                    report(measured, args.streams, args.concurrency)
                if sse is not None:
                    print()
                    report_sse(*sse)
                print()
                report_routing(time_choice(config), routing)
                print(f"load average after: {os.getloadavg()[0]:.2f}")
                for profiler in ("cprofile", "py-spy"):
                    if args.profile in (profiler, "both"):
                        await profile_run(profiler, config, node_port, work, targets[3], args)
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
    proxies = {"bare": bare.pid, "node": node.pid}
    cpu_c1: dict[tuple[str, str], float] = {}
    samples: dict[str, list[list[float]]] = {}
    for kind, request, data, what in (
        ("plain", plain_request, plain, "latency, concurrency 1, non-streaming"),
        ("stream", stream_request, streamed, "first byte, concurrency 1, streaming"),
    ):
        print(f"{what} …", flush=flush)
        # each proxy is idle in the other targets' turns: its CPU time over the run is
        # what its own requests cost
        before = {name: cpu_seconds(pid) for name, pid in proxies.items()}
        samples[kind] = await interleaved_latency(targets, request, data, n, warmup=200)
        for name, pid in proxies.items():
            cpu_c1[(name, kind)] = (cpu_seconds(pid) - before[name]) / (n + 200)
    print(f"throughput, concurrency {args.concurrency} …", flush=flush)
    watch = {"node": node.pid, "upstream": upstream.pid, "bare": bare.pid}
    throughput_targets = [t for t in targets if t.name != "relay"]
    tp: dict[tuple[str, str], list[Throughput]] = {}
    # this machine's speed drifts by tens of percent within seconds: rounds, each target's
    # turn rotated, and the medians reported, so drift hits direct, bare and node alike
    for turn in range(args.rounds):
        for kind, request, data in (
            ("plain", plain_request, plain),
            ("stream", stream_request, streamed),
        ):
            turns = throughput_targets
            for target in turns[turn % 3 :] + turns[: turn % 3]:
                run = await throughput(target, request, data, n, args.concurrency, watch)
                tp.setdefault((target.name, kind), []).append(run)
    await asyncio.sleep(QUIET_S)  # the node gives freed memory back once quiet
    rss_idle_after = rss_mb(node.pid)
    print(f"  node RSS idle after the load: {rss_idle_after:.1f} MB, {smaps(node.pid)}")
    await memory_evidence(args, node, wait_s=2)
    print(f"{args.streams} open streams …", flush=flush)
    held = await open_streams(node, targets[3], upstream.url, args.streams)
    await asyncio.sleep(QUIET_S)
    print(f"  node RSS after the streams closed: {rss_mb(node.pid):.1f} MB, {smaps(node.pid)}")
    await memory_evidence(args, node, wait_s=30)
    return Measured(
        samples["plain"],
        samples["stream"],
        cpu_c1,
        tp,
        rss_idle_start,
        rss_idle_after,
        held,
        rss_mb(node.pid),
        rss_mb(node.pid, "VmHWM"),
    )


async def measure_sse(
    args: argparse.Namespace, targets: list[Target], node: Child, upstream: Child, bare: Child
) -> tuple[dict[str, EventRate], float, float, int, dict[str, float]]:
    print("SSE events/s, long answers …", flush=True)
    pids = {"bare": bare.pid, "node": node.pid}
    both = [t for t in targets if t.name in pids]
    rates = await event_rates(both, pids, max(100, args.requests // 10), args.rounds)
    print("CPU per event, 10,000-event answers …", flush=True)
    marginal = await marginal_event_cpu(both, pids, upstream.url)
    print(f"RSS per open stream, {LONG_STREAMS_HELD} held …", flush=True)
    node_target = targets[3]
    short = await rss_per_stream(node, node_target, upstream.url, LONG_STREAMS_HELD, long=False)
    long = await rss_per_stream(node, node_target, upstream.url, LONG_STREAMS_HELD, long=True)
    return rates, long, short, LONG_STREAMS_HELD, marginal


async def memory_evidence(args: argparse.Namespace, node: Child, *, wait_s: float) -> None:
    """With --memory-evidence: the node's own account of its memory (live Python bytes,
    what grew since the first look), from proxybench/memwatch.py via its log."""
    if not args.memory_evidence:
        return
    os.kill(node.pid, signal.SIGUSR1)
    await asyncio.sleep(wait_s)  # a snapshot comparison takes the node a while
    lines = [ln for ln in node.log.read_text(errors="replace").splitlines() if "MEMWATCH" in ln]
    for line in lines[args.memory_lines_seen :]:
        print("  " + line.replace("MEMWATCH ", ""), flush=True)
    args.memory_lines_seen = len(lines)


# idle upstream connections close within twice their keep-alive, and the node collects
# and trims at its second quiet look after that
QUIET_S = 2 * UPSTREAM_KEEPALIVE_S + 2 * TRIM_EVERY_S + 1


def smaps(pid: int) -> str:
    """Where a process's RSS is, by kind of mapping."""
    heap = anon = other = 0
    kind = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        parts = line.split()
        if "-" in parts[0] and len(parts) >= 5:
            kind = "heap" if parts[-1] == "[heap]" else ("anon" if len(parts) == 5 else "file")
        elif parts[0] == "Rss:":
            kb = int(parts[1])
            if kind == "heap":
                heap += kb
            elif kind == "anon":
                anon += kb
            else:
                other += kb
    return (
        f"of it: heap {heap / 1024:.1f} MB, anonymous maps {anon / 1024:.1f} MB"
        f" (pymalloc's arenas among them), files {other / 1024:.1f} MB"
    )


def report(m: Measured, streams: int, concurrency: int) -> None:
    rows: list[Row] = []
    for label, samples, limits in (
        ("latency c=1", m.latency, {"p50": 0.0005, "p99": 0.002}),
        ("stream first byte c=1", m.first_byte, {"p50": 0.001, "p99": None}),
    ):
        for name, q in (("p50", 0.5), ("p99", 0.99)):
            d, r, b, v = (percentile(s, q) for s in samples)
            limit = limits[name]
            rows.append(
                Row(
                    f"{label} {name} (ms)",
                    ms(d),
                    ms(r),
                    ms(b),
                    ms(v),
                    ms(v - d),
                    f"<= {limit * 1000:g}" if limit is not None else "",
                    verdict(v - d <= limit) if limit is not None else "",
                )
            )
    for kind in ("plain", "stream"):
        cpu_b, cpu_v = m.cpu_c1[("bare", kind)], m.cpu_c1[("node", kind)]
        rows.append(
            Row(f"  proxy CPU per {kind} request, c=1 (ms)", "", "", ms(cpu_b), ms(cpu_v),
                "", "", "")
        )  # fmt: skip
    for kind, label in (("plain", "non-streaming"), ("stream", "streaming")):
        td, tb, tv = (m.throughput[(t, kind)] for t in ("direct", "bare", "node"))
        node_rps = [t.rps for t in tv]
        rows.append(
            Row(
                f"throughput c={concurrency} {label} (req/s)",
                f"{median(t.rps for t in td):,.0f}",
                "",
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
                "",
                f"{cpu_b:.3f}",
                f"{cpu_v:.3f}",
                "",
                "",
                f"node: {1000 / cpu_v:,.0f}/s per core (bare {1000 / cpu_b:,.0f})",
            )
        )
    rows += [
        Row("node RSS idle after start (MB)", "", "", "", f"{m.rss_idle_start:.1f}", "", "<= 80",
            verdict(m.rss_idle_start <= 80)),
        Row("node RSS idle after the load (MB)", "", "", "", f"{m.rss_idle_after:.1f}", "", "<= 80",
            verdict(m.rss_idle_after <= 80)),
        Row(f"node RSS, {m.held.opened} open streams (MB)", "", "", "", f"{m.held.rss_mb:.1f}",
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
    back = m.rss_after_streams / m.rss_idle_after - 1
    print(
        f"  RSS after the streams closed is {back:+.0%} of idle after the load"
        f" (target within 15%): {verdict(back <= 0.15)}"
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
    parser.add_argument(
        "--only",
        choices=("all", "routing", "sse"),
        default="all",
        help="routing, sse: only the routing, or the long-answer (SSE events/s, RSS per"
        " stream) figures, each with the routing ones",
    )
    parser.add_argument(
        "--memory-evidence",
        action="store_true",
        help="run the node under proxybench/memwatch.py (tracemalloc) and print its live"
        " Python memory and what grew, beside RSS (slows the node: for memory figures only)",
    )
    parser.add_argument(
        "--node-malloc",
        choices=["pymalloc", "malloc"],
        help="the node's PYTHONMALLOC (malloc: glibc's, which the node trims when quiet)",
    )
    parser.add_argument(
        "--records",
        choices=("on", "off"),
        default="on",
        help="the node keeps usage records ([logs] usage_records): compare on with off",
    )
    parser.add_argument(
        "--database-url",
        default="",
        help="the node's ledger in this (empty) PostgreSQL database instead of SQLite",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="serving processes (run --workers N; more than 1 needs --database-url)",
    )
    parser.add_argument("--serve-upstream", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--serve-bare", nargs=2, metavar=("PORT", "URL"), help=argparse.SUPPRESS)
    parser.add_argument("--serve-relay", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_upstream:
        asyncio.run(serve_upstream(args.serve_upstream))
        return
    if args.serve_bare:
        asyncio.run(serve_bare_proxy(int(args.serve_bare[0]), args.serve_bare[1]))
        return
    if args.serve_relay:
        asyncio.run(serve_tcp_relay(*args.serve_relay))
        return
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()
