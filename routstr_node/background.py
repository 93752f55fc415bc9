"""Work the node does on its own while it serves: one task per job, on a fixed beat."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from routstr_node.state import NODE, NodeState

log = logging.getLogger(__name__)

Job = Callable[[NodeState], Awaitable[object]]


def every(
    interval_s: float, name: str, job: Job
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context running ``job`` every ``interval_s`` while the app runs.

    A failing round is logged and the next one runs: one bad answer from a mint must not
    stop the work for good.
    """

    async def beat(app: web.Application) -> None:
        while True:
            await asyncio.sleep(interval_s)
            node = app.get(NODE)
            if node is None:
                continue
            try:
                await job(node)
            except Exception as exc:
                log.warning("%s: this round failed: %s", name, type(exc).__name__)

    async def context(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(beat(app), name=name)
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return context
