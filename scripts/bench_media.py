#!/usr/bin/env python3
"""The node's memory while it relays large uploads: N transcriptions of big audio files
at once (default 20 of 25 MB), each streamed through the node to the upstream.

Processes: this one (the clients, and a local FakeWallet mint as a child), the demo's
fake upstream (this script with ``--serve-upstream``: it spools each upload to a
temporary file, reads its duration and answers with usage.seconds) and the node
(``routstr-node run``), each a child of its own, so the node's RSS is its own. The
node's RSS is sampled every 20 ms while the uploads run; it is printed idle, at its
peak and after, per round. An upload held whole in memory once would add its size
(25 MB) per concurrent upload; streamed, the node holds a spool block (1 MB) and
socket buffers per upload. Every loop is bounded and stops by itself.

    .venv/bin/python scripts/bench_media.py [--uploads 20] [--mb 25] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
import wave
from pathlib import Path

import aiohttp
from proxybench import LOOPBACK
from proxybench.load import fund
from proxybench.processes import free_port, rss_mb, spawn, start_node, wait_healthy

MODEL = "bench-whisper"
UPSTREAM_KEY = "sk-bench-upstream"
SAMPLE_EVERY_S = 0.02
ROUND_TIMEOUT_S = 600.0
RATE = 8000  # 8-bit mono: a byte a sample, 25 MB is about 52 minutes


def write_wav(path: Path, size_bytes: int) -> float:
    """A WAV of about ``size_bytes``; its duration in seconds."""
    frames = size_bytes - 44
    block = b"\x80" * (1 << 20)
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(1)
        writer.setframerate(RATE)
        left = frames
        while left > 0:
            writer.writeframes(block[: min(left, len(block))])
            left -= len(block)
    return frames / RATE


def node_toml(data_dir: Path, port: int, mint_url: str, upstream_url: str) -> str:
    return f"""
[node]
name = "bench-media"
host = "{LOOPBACK}"
port = {port}
data_dir = "{data_dir}"
[mints]
trusted = ["{mint_url}"]
[pricing]
btc_usd = 100000
price_sources = []
[[upstreams]]
name = "fake"
base_url = "{upstream_url}"
api_key = "{UPSTREAM_KEY}"
timeout_s = 600
[[models]]
id = "{MODEL}"
category = "transcription"
upstream = "fake"
upstream_model = "whisper-1"
audio_sat_per_minute = 1
[limits]
requests_per_minute = 100000
requests_per_hour = 1000000
requests_per_day = 10000000
"""


async def transcribe(session: aiohttp.ClientSession, url: str, key: str, audio: Path) -> int:
    form = aiohttp.FormData()
    form.add_field("model", MODEL)
    with audio.open("rb") as file:  # aiohttp streams it from disk
        form.add_field("file", file, filename=audio.name, content_type="audio/wav")
        async with session.post(
            url + "/v1/audio/transcriptions", data=form, headers={"Authorization": f"Bearer {key}"}
        ) as resp:
            await resp.read()
            return resp.status


async def one_round(
    node_pid: int, url: str, key: str, audio: Path, uploads: int
) -> dict[str, float]:
    idle = rss_mb(node_pid)
    peak = idle
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_mb(node_pid))
            await asyncio.sleep(SAMPLE_EVERY_S)

    sampler = asyncio.create_task(sample())
    started = time.perf_counter()
    timeout = aiohttp.ClientTimeout(total=ROUND_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        statuses = await asyncio.gather(
            *(transcribe(session, url, key, audio) for _ in range(uploads))
        )
    seconds = time.perf_counter() - started
    done.set()
    await sampler
    if set(statuses) != {200}:
        raise RuntimeError(f"uploads answered {statuses}")
    return {"idle": idle, "peak": peak, "after": rss_mb(node_pid), "seconds": seconds}


async def bench(args: argparse.Namespace) -> None:
    from routstr_node.demo.mint import run_local_mint

    with tempfile.TemporaryDirectory(prefix="bench-media-") as directory:
        work = Path(directory)
        audio = work / "speech.wav"
        duration = write_wav(audio, args.mb * 1_000_000)
        up_port, node_port = free_port(), free_port()
        upstream = spawn(
            "upstream",
            [sys.executable, __file__, "--serve-upstream", str(up_port)],
            work / "upstream.log",
            f"http://{LOOPBACK}:{up_port}",
        )
        node = None
        try:
            await wait_healthy(upstream, "/v1/media/public/image-0.png")
            async with run_local_mint(work / "mint") as mint:
                config = work / "node.toml"
                config.write_text(
                    node_toml(work / "data", node_port, mint.url, upstream.url + "/v1")
                )
                node = start_node(config, node_port, work / "node.log")
                await wait_healthy(node, "/health")
                per_upload_sat = -(-int(duration) // 60) + 1
                key, _ = await fund(
                    node.url, mint.url, per_upload_sat * args.uploads * args.rounds + 100
                )
                megabytes = audio.stat().st_size / 1e6
                print(
                    f"{args.uploads} transcriptions at once of a {megabytes:.1f} MB"
                    f" WAV ({duration / 60:.0f} min), {args.rounds} rounds; node RSS in MB"
                )
                heads = ("round", "idle", "peak", "peak-idle", "after", "wall s")
                print(
                    " ".join(f"{h:>{w}}" for h, w in zip(heads, (5, 8, 8, 10, 8, 8), strict=True))
                )
                rounds = []
                for n in range(1, args.rounds + 1):
                    r = await one_round(node.pid, node.url, key, audio, args.uploads)
                    rounds.append(r)
                    print(
                        f"{n:>5} {r['idle']:>8.1f} {r['peak']:>8.1f} {r['peak'] - r['idle']:>10.1f}"
                        f" {r['after']:>8.1f} {r['seconds']:>8.1f}"
                    )
                rises = [r["peak"] - r["idle"] for r in rounds]
                held_whole = args.uploads * audio.stat().st_size / 2**20
                print(
                    f"peak rise {min(rises):.1f}-{max(rises):.1f} MB for {args.uploads} uploads"
                    f" ({max(rises) / args.uploads:.2f} MB each at most); held whole once, they"
                    f" would be {held_whole:.0f} MB; VmHWM {rss_mb(node.pid, 'VmHWM'):.1f} MB"
                )
        finally:
            if node is not None:
                node.stop()
            upstream.stop()


async def serve_upstream(port: int) -> None:
    from routstr_node.demo.upstream import UpstreamBehaviour, run_upstream

    behaviour = UpstreamBehaviour(expected_api_key=UPSTREAM_KEY)
    async with run_upstream(LOOPBACK, port, behaviour):
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=20)
    parser.add_argument("--mb", type=int, default=25, help="size of each file, in MB")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve-upstream", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_upstream:
        asyncio.run(serve_upstream(args.serve_upstream))
        return
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()
