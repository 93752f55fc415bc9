"""Announcing this node (NIP-91) on the configured relays, and keeping it current.

Every few seconds the settings in force are compared with what each relay last
accepted: an admin change (new name, mints, URL) is published within one check, an
unchanged announcement again every hour (relays and readers drop stale ones). A relay
that fails is retried with growing waits; it never holds up the others or the node.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from routstr_node.config import Settings
from routstr_node.nostr.announcement import KIND, announcement
from routstr_node.nostr.backoff import Backoff
from routstr_node.nostr.event import Event, Tags, sign
from routstr_node.nostr.keys import KeyCache
from routstr_node.nostr.logsafe import failure, relay_name
from routstr_node.nostr.relay_client import publish

log = logging.getLogger(__name__)

ANNOUNCE_EVERY_S = 3600.0
CHECK_EVERY_S = 2.0
RETRY_FIRST_S = 5.0
RETRY_MOST_S = 300.0

Wanted = tuple[str, Tags, str]  # pubkey, tags, content: what the relay should hold


@dataclass
class _Relay:
    backoff: Backoff = field(default_factory=lambda: Backoff(RETRY_FIRST_S, RETRY_MOST_S))
    accepted: Wanted | None = None
    accepted_at: float = 0.0
    retry_at: float = 0.0

    def due(self, wanted: Wanted, now: float) -> bool:
        if now < self.retry_at:
            return False
        return self.accepted != wanted or now - self.accepted_at >= ANNOUNCE_EVERY_S


class Announcer:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: Callable[[], Settings],
        keys: KeyCache,
        *,
        check_every_s: float = CHECK_EVERY_S,
    ) -> None:
        self._session = session
        self._settings = settings
        self._keys = keys
        self._check_every_s = check_every_s
        self._relays: dict[str, _Relay] = {}
        self._warned_no_url = False
        self._last_created_at = 0

    async def run(self) -> None:
        """Check and publish until cancelled; a failing round is logged, the next runs."""
        while True:
            try:
                await self.check()
            except Exception as exc:
                log.warning("nostr announcement: this round failed: %s", type(exc).__name__)
            await asyncio.sleep(self._check_every_s)

    async def check(self) -> None:
        """Publish to every relay whose copy is missing, outdated or an hour old."""
        settings = self._settings()
        relays = list(dict.fromkeys(settings.nostr.relays))
        if not settings.nostr.announce or not relays:
            self._relays.clear()
            return
        if not settings.node.public_url:
            if not self._warned_no_url:
                log.warning(
                    "nostr: announce is on but node.public_url is empty: the node is not"
                    " announced until public_url says where clients reach it"
                )
                self._warned_no_url = True
            return
        self._warned_no_url = False
        key = self._keys.key(settings)
        tags, content = announcement(settings, key.pubkey)
        wanted: Wanted = (key.pubkey, tags, content)
        self._relays = {url: self._relays.get(url) or _Relay() for url in relays}
        now = time.monotonic()
        due = [url for url, relay in self._relays.items() if relay.due(wanted, now)]
        if not due:
            return
        # replaceable: a relay keeps the newest, so each new version is strictly newer
        created_at = max(int(time.time()), self._last_created_at + 1)
        self._last_created_at = created_at
        event = sign(key.secret, created_at=created_at, kind=KIND, tags=tags, content=content)
        await asyncio.gather(*(self._publish(url, event, wanted) for url in due))

    async def _publish(self, url: str, event: Event, wanted: Wanted) -> None:
        relay = self._relays[url]
        try:
            await publish(self._session, url, event)
        except Exception as exc:
            wait = relay.backoff.next()
            relay.retry_at = time.monotonic() + wait
            log.warning(
                "nostr: announcing to %s failed: %s; retrying in %.0f s",
                relay_name(url),
                failure(exc),
                wait,
            )
            return
        relay.backoff.reset()
        relay.accepted, relay.accepted_at, relay.retry_at = wanted, time.monotonic(), 0.0
        log.info("nostr: announced on %s (event %s)", relay_name(url), event.id)
