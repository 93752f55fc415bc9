"""A node as a process of its own (``routstr-node run``), to kill it for real (SIGKILL)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

READY_TIMEOUT_S = 30.0


@dataclass
class NodeProcess:
    config: Path
    port: int
    process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        cli = Path(sys.executable).parent / "routstr-node"
        self.process = await asyncio.create_subprocess_exec(
            str(cli),
            "run",
            "--config",
            str(self.config),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await self._healthy()

    async def _healthy(self) -> None:
        async with aiohttp.ClientSession() as session, asyncio.timeout(READY_TIMEOUT_S):
            while True:
                assert self.process is not None and self.process.returncode is None, (
                    "the node exited during start-up"
                )
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(self.url + "/health") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.05)

    async def kill(self) -> None:
        """SIGKILL: no cleanup, no flush, as a power cut."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(40):
                    await self.process.wait()
            except TimeoutError:
                await self.kill()


@asynccontextmanager
async def node_process(config: Path, port: int) -> AsyncIterator[NodeProcess]:
    node = NodeProcess(config, port)
    await node.start()
    try:
        yield node
    finally:
        await node.kill()
