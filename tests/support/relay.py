"""A real Nostr relay (``nostr-relay`` under gunicorn) on loopback for tests.

It stores what it is sent without checking signatures (only the size validator runs),
so a forged event reaches subscribers and the node's own verification is what is
tested. Its own sqlite file lives in the given directory. At the end the gunicorn
master is stopped, then its worker is made sure to be gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

NOSTR_RELAY = Path(sys.executable).parent / "nostr-relay"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


@dataclass
class RunningRelay:
    url: str  # ws://127.0.0.1:PORT
    http_url: str  # http://127.0.0.1:PORT (NIP-11)
    log_path: Path
    process: asyncio.subprocess.Process

    async def stop(self) -> None:
        """Stop it before the block ends (to see what clients do when a relay goes away)."""
        await _stop(self.process)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(directory: Path, port: int) -> str:
    """The relay's YAML config (written as JSON, which YAML reads)."""
    return json.dumps(
        {
            "storage": {
                "sqlalchemy.url": f"sqlite+aiosqlite:///{directory / 'nostr.sqlite3'}",
                "validators": ["nostr_relay.validators.is_not_too_large"],
            },
            "gunicorn": {
                "bind": f"127.0.0.1:{port}",
                "workers": 1,
                "loglevel": "warning",
                # how long a stopping worker may take (its open websockets) before the
                # master kills it: the default, 30 s, is spent on every stop
                "graceful_timeout": 1,
            },
            "max_event_size": 200_000,
        }
    )


def _children(pid: int) -> list[int]:
    """The processes ``pid`` started (its gunicorn workers), from /proc."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            text = Path(f"/proc/{pid}/task/{task}/children").read_text()
            found += [int(child) for child in text.split()]
    return found


def _alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _is_gunicorn(pid: int) -> bool:
    try:
        return b"gunicorn" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


async def _wait_ready(process: asyncio.subprocess.Process, http_url: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    headers = {"Accept": "application/nostr+json"}
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise RuntimeError(f"nostr-relay exited at start ({process.returncode})")
            with contextlib.suppress(aiohttp.ClientError, OSError, ValueError):
                async with session.get(http_url, headers=headers) as answer:
                    if answer.status == 200 and "supported_nips" in await answer.json(
                        content_type=None
                    ):
                        return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"nostr-relay did not answer NIP-11 within {START_TIMEOUT_S} s")


async def _stop(process: asyncio.subprocess.Process) -> None:
    """Master first (it stops its worker), then make sure the worker is gone; idempotent."""
    workers = _children(process.pid)
    if process.returncode is None:
        process.terminate()  # gunicorn stops its worker within graceful_timeout, then itself
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await process.wait()
    for _ in range(int(STOP_TIMEOUT_S / 0.1)):  # the master stops its worker: wait for it
        if not any(_alive(w) for w in workers):
            break
        await asyncio.sleep(0.1)
    for worker in workers:
        if _alive(worker) and _is_gunicorn(worker):
            os.kill(worker, signal.SIGKILL)


@asynccontextmanager
async def run_relay(directory: Path, port: int | None = None) -> AsyncIterator[RunningRelay]:
    """Serve a fresh relay until the block ends (on ``port``, or a free one)."""
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    config = directory / "relay.yaml"
    config.write_text(_config(directory, port))
    log_path = directory / "relay.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            str(NOSTR_RELAY),
            "-c",
            str(config),
            "serve",
            cwd=directory,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C of the test run is not also sent to it
        )
        try:
            http_url = f"http://127.0.0.1:{port}"
            await _wait_ready(process, http_url)
            yield RunningRelay(f"ws://127.0.0.1:{port}", http_url, log_path, process)
        finally:
            await _stop(process)
