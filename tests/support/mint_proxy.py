"""A fault proxy in front of a real mint: what a mint across the internet does to a node.

Every request goes through to the real mint unchanged. A fault, set for one route
(``"POST /v1/swap"``, or the start of a path: ``"GET /v1/melt/quote/bolt11/"``) and a
number of its next requests, changes what happens around the real exchange:

- ``delay``: the request is delivered, the mint answers, and the answer is held back
  for a while before it goes out (a slow mint, a slow Lightning payment);
- ``drop``: the request is delivered and carried out, and the connection is closed
  instead of answering (an answer lost on the way);
- ``hold``: the request is held before it is delivered, until :meth:`release` (a
  request stuck in a queue, reaching the mint late);
- ``refuse``: the proxy stops accepting connections altogether (the mint is down) until
  :meth:`accept` again.

Each faulted exchange is counted, so a test knows the request reached the mint.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import StrEnum

import aiohttp
from aiohttp import web

from routstr_node.demo.mint import free_port

LOOPBACK = "127.0.0.1"


class Fault(StrEnum):
    DELAY = "delay"
    DROP = "drop"
    HOLD = "hold"


@dataclass
class _Rule:
    fault: Fault
    times: int
    seconds: float = 0.0


@dataclass
class MintProxy:
    """Where the node is pointed instead of the mint, and the faults it plays."""

    mint_url: str
    port: int = 0
    rules: dict[str, _Rule] = field(default_factory=dict)
    arrived: dict[str, int] = field(default_factory=dict)  # faulted requests that came in
    delivered: dict[str, int] = field(default_factory=dict)  # faulted requests the mint got
    _released: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None
    _site: web.TCPSite | None = None
    _session: aiohttp.ClientSession | None = None
    _pending: set[asyncio.Task[web.StreamResponse]] = field(default_factory=set)
    _progress: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    # -- faults ------------------------------------------------------------------------

    def delay(self, route: str, seconds: float, *, times: int = 1) -> None:
        self.rules[route] = _Rule(Fault.DELAY, times, seconds)

    def drop(self, route: str, *, times: int = 1) -> None:
        self.rules[route] = _Rule(Fault.DROP, times)

    def hold(self, route: str, *, times: int = 1) -> None:
        self._released.clear()
        self.rules[route] = _Rule(Fault.HOLD, times)

    def release(self) -> None:
        """Deliver the held requests now."""
        self._released.set()

    def clear(self) -> None:
        self.rules.clear()
        self._released.set()

    async def refuse(self) -> None:
        """Stop listening and close every open connection: each new one is refused, as
        by a mint that is down."""
        if self._site is not None:
            await self._site.stop()
            self._site = None
        server = self._runner.server if self._runner is not None else None
        for handler in server.connections if server is not None else []:
            if handler.transport is not None:
                handler.transport.close()

    async def accept(self) -> None:
        """Listen again on the same port."""
        if self._site is None and self._runner is not None:
            self._site = web.TCPSite(self._runner, LOOPBACK, self.port)
            await self._site.start()

    async def reached(self, route: str, count: int = 1, timeout_s: float = 30.0) -> None:
        """Wait until ``count`` faulted requests of ``route`` were delivered to the mint."""
        await self._counted(self.delivered, route, count, timeout_s)

    async def came(self, route: str, count: int = 1, timeout_s: float = 30.0) -> None:
        """Wait until ``count`` faulted requests of ``route`` came in (held ones too)."""
        await self._counted(self.arrived, route, count, timeout_s)

    async def _counted(
        self, counts: dict[str, int], route: str, count: int, timeout_s: float
    ) -> None:
        async with asyncio.timeout(timeout_s):
            while counts.get(route, 0) < count:
                self._progress.clear()
                await self._progress.wait()

    # -- serving -----------------------------------------------------------------------

    def _take(self, route: str) -> tuple[str, _Rule] | None:
        """The rule for this request (a route names a path or the start of one)."""
        for name, rule in self.rules.items():
            if route.startswith(name) and rule.times > 0:
                rule.times -= 1
                return name, rule
        return None

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        taken = self._take(f"{request.method} {request.path}")
        route, rule = taken if taken is not None else ("", None)
        if rule is not None:
            self.arrived[route] = self.arrived.get(route, 0) + 1
            self._progress.set()
        body = await request.read()
        if rule is not None and rule.fault is Fault.HOLD:
            await self._released.wait()
        assert self._session is not None
        async with self._session.request(
            request.method,
            self.mint_url + request.path_qs,
            data=body,
            headers={"Content-Type": request.headers.get("Content-Type", "application/json")},
        ) as answer:
            payload = await answer.read()
            status = answer.status
            content_type = answer.headers.get("Content-Type", "application/json")
        if rule is not None:
            self.delivered[route] = self.delivered.get(route, 0) + 1
            self._progress.set()
            if rule.fault is Fault.DELAY:
                await asyncio.sleep(rule.seconds)
            elif rule.fault is Fault.DROP:
                transport = request.transport
                if transport is not None:
                    transport.abort()  # carried out, and the answer never arrives
                raise asyncio.CancelledError
        return web.Response(body=payload, status=status, headers={"Content-Type": content_type})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        # the exchange with the mint finishes even when the node gives up waiting: a
        # request that reached the mint is carried out there, whatever the node does
        task = asyncio.ensure_future(self._forward(request))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return await asyncio.shield(task)

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        self.port = self.port or free_port()
        await self.accept()

    async def stop(self) -> None:
        self.clear()
        for task in list(self._pending):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()


@asynccontextmanager
async def mint_proxy(mint_url: str) -> AsyncIterator[MintProxy]:
    proxy = MintProxy(mint_url)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()
