"""Following other nodes' announcements on every configured relay.

One subscription per relay, kept open after the stored events for live updates and
opened again with growing waits when it ends. It asks for announcements and for the
deletion requests that withdraw them (NIP-09, tagged ``["k", "38421"]``). Only news is
verified (id and signature) and kept in the directory; a changed relay list starts over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import aiohttp

from routstr_node.config import Settings
from routstr_node.nostr.announcement import DELETION, KIND
from routstr_node.nostr.backoff import Backoff
from routstr_node.nostr.directory import MAX_NODES, NodeDirectory
from routstr_node.nostr.event import parse, verify
from routstr_node.nostr.logsafe import failure, relay_name
from routstr_node.nostr.relay_client import EndOfStoredEvents, subscribe

log = logging.getLogger(__name__)

CHECK_EVERY_S = 2.0  # how soon a relay added or removed by the admin is followed
RETRY_FIRST_S = 1.0
RETRY_MOST_S = 300.0
SUBSCRIPTION = "routstr-nodes"
HEALTHY_AFTER_S = 60.0


class Discoverer:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: Callable[[], Settings],
        directory: NodeDirectory,
        *,
        check_every_s: float = CHECK_EVERY_S,
    ) -> None:
        self._session = session
        self._settings = settings
        self._directory = directory
        self._check_every_s = check_every_s
        self._relays: tuple[str, ...] = ()
        self._followers: list[asyncio.Task[None]] = []

    async def run(self) -> None:
        """Follow the configured relays until cancelled (which stops every follower)."""
        try:
            while True:
                relays = tuple(dict.fromkeys(self._settings().nostr.relays))
                if relays != self._relays:
                    await self._stop()
                    self._directory.clear()
                    self._relays = relays
                    self._followers = [
                        asyncio.create_task(self._follow(url), name=f"nostr-follow-{i}")
                        for i, url in enumerate(relays)
                    ]
                await asyncio.sleep(self._check_every_s)
        finally:
            await self._stop()

    async def _stop(self) -> None:
        for task in self._followers:
            task.cancel()
        for task in self._followers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._followers = []

    async def _follow(self, url: str) -> None:
        backoff = Backoff(RETRY_FIRST_S, RETRY_MOST_S)
        failing = False
        announcements = {"kinds": [KIND], "limit": MAX_NODES}
        withdrawals = {"kinds": [DELETION], "#k": [str(KIND)], "limit": MAX_NODES}
        while True:
            answered_at: float | None = None
            try:
                async for item in subscribe(
                    self._session, url, SUBSCRIPTION, announcements, withdrawals
                ):
                    if isinstance(item, EndOfStoredEvents):
                        answered_at = time.monotonic()
                        if failing:
                            log.info("nostr: following %s again", relay_name(url))
                            failing = False
                        continue
                    try:
                        self._take(item)
                    except Exception as exc:  # one bad event never ends the subscription
                        log.debug("nostr: dropped an event from %s: %r", relay_name(url), exc)
            except Exception as exc:
                # one warning per outage; the retries after it are debug
                level = logging.DEBUG if failing else logging.WARNING
                log.log(
                    level,
                    "nostr: following %s stopped: %s; retrying with backoff",
                    relay_name(url),
                    failure(exc),
                )
                failing = True
            # the waits start short again only after a subscription that held a while: a
            # relay that answers and then breaks at once is retried ever more slowly
            if answered_at is not None and time.monotonic() - answered_at >= HEALTHY_AFTER_S:
                backoff.reset()
            await asyncio.sleep(backoff.next())

    def _take(self, raw: object) -> None:
        event = parse(raw)
        if event is None or not self._directory.is_news(event):
            return
        if not verify(event):
            log.debug("nostr: dropped event %s: bad id or signature", event.id)
            return
        self._directory.offer(event)
