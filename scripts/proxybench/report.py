"""Printing figures: the table, and where the node's time goes under each profiler."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pstats
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from proxybench import LOOPBACK, MODEL
from proxybench.load import Target, body, plain_request, stream_request, throughput
from proxybench.processes import spawn, wait_healthy


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"


@dataclass
class Row:
    figure: str
    direct: str
    relay: str
    bare: str
    node: str
    added: str
    target: str
    verdict: str


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISS"


def print_table(rows: list[Row]) -> None:
    headings = Row(
        "figure", "direct", "tcp relay", "bare proxy", "via node", "node adds", "target", ""
    )
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
        if args.only == "sse":  # long answers only: where a relayed event's time goes
            from proxybench.sse import event_rates

            rates = await event_rates([via], watch, max(100, n // 10), 1)
            print(f"under the profiler: {rates['node'].events_per_s[0]:,.0f} events/s")
        else:
            plain = await throughput(via, plain_request, body(MODEL, False), n, c, watch)
            streamed = await throughput(via, stream_request, body(MODEL, True), n // 2, c, watch)
            print(
                f"under the profiler: {plain.rps:,.0f} plain req/s, {streamed.rps:,.0f} streams/s"
            )
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
