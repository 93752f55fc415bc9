"""Nostr while the node runs: one client session for every relay, the announcer and
the discoverer as background tasks, the directory for GET /v1/providers."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from routstr_node.config import Settings
from routstr_node.nostr.announcer import Announcer
from routstr_node.nostr.directory import NodeDirectory
from routstr_node.nostr.discoverer import Discoverer
from routstr_node.nostr.keys import KeyCache
from routstr_node.state import NODE

# websockets live for hours: only connecting is bounded (each call bounds its own steps)
_SESSION_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10)


@dataclass
class NostrService:
    directory: NodeDirectory
    keys: KeyCache
    settings: Callable[[], Settings]

    def nodes(self) -> list[dict[str, Any]]:
        """The nodes announced on the configured relays, this one marked ``self``."""
        settings = self.settings()
        if not settings.nostr.relays:
            return []
        try:
            own: str | None = self.keys.key(settings).pubkey
        except ValueError:  # a key the settings cannot give: nothing is this node's
            own = None
        return self.directory.listing(own_pubkey=own)


NOSTR = web.AppKey("nostr", NostrService)


ANNOUNCE_LEASE = "nostr-announce"
ANNOUNCE_LEASE_S = 180  # a holder gone this long is replaced by another process


async def nostr_context(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: Nostr runs beside the node and stops before it (after NODE is set)."""
    node = app[NODE]

    def settings() -> Settings:
        return node.settings  # replaced as a whole by every admin change

    session = aiohttp.ClientSession(timeout=_SESSION_TIMEOUT)
    keys = KeyCache(node.shared_nostr_key)
    directory = NodeDirectory()
    app[NOSTR] = NostrService(directory, keys, settings)
    holder = uuid.uuid4().hex

    async def may_announce() -> bool:
        """One process of the node announces: the lease's holder (renewed every round)."""
        return await node.wallet.payouts.take_lease(ANNOUNCE_LEASE, holder, ANNOUNCE_LEASE_S)

    announcer = Announcer(
        session, settings, keys, may_announce=may_announce if node.wallet.store.shared else None
    )
    tasks = [
        asyncio.create_task(announcer.run(), name="nostr-announce"),
        asyncio.create_task(Discoverer(session, settings, directory).run(), name="nostr-discover"),
    ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await session.close()
