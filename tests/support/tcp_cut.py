"""A TCP proxy a test cuts and restores: a database that becomes unreachable while the
node serves (every connection dropped, new ones refused), then comes back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from routstr_node.demo.mint import free_port

LOOPBACK = "127.0.0.1"


@dataclass
class TcpCut:
    target_port: int
    port: int = field(default_factory=free_port)
    cut_off: bool = False
    _open: set[asyncio.StreamWriter] = field(default_factory=set)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_off:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(LOOPBACK, self.target_port)
        except OSError:
            writer.close()
            return
        self._open |= {writer, up_writer}
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._open -= {writer, up_writer}

    def cut(self) -> None:
        """Every open connection dropped; new ones closed at once until :meth:`restore`."""
        self.cut_off = True
        for writer in list(self._open):
            writer.close()

    def restore(self) -> None:
        self.cut_off = False


@asynccontextmanager
async def tcp_cut(target_port: int) -> AsyncIterator[TcpCut]:
    proxy = TcpCut(target_port)
    server = await asyncio.start_server(proxy._serve, LOOPBACK, proxy.port)
    try:
        yield proxy
    finally:
        proxy.cut()
        server.close()
        await server.wait_closed()
