"""Announcing this node (NIP-91) on the configured relays, keeping it current, and
withdrawing it where it should no longer be.

Every few seconds the settings in force are compared with what each relay last
accepted: an admin change (new name, mints, URL) is published within one check, an
unchanged announcement again every hour (relays and readers drop stale ones). A relay
that holds an announcement while announcing is off, the relay is no longer listed or
there is no public URL gets a NIP-09 deletion request; what each relay holds is kept in
the data dir (``AnnouncedFile``), so this also works after a restart. A relay that
fails is retried with growing waits; it never holds up the others or the node.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from routstr_node.config import Settings
from routstr_node.nostr.announced import AnnouncedFile
from routstr_node.nostr.announcement import DELETION, KIND, WITHDRAWN, announcement, withdrawal
from routstr_node.nostr.backoff import Backoff
from routstr_node.nostr.event import Event, Tags, sign
from routstr_node.nostr.keys import KeyCache, NodeKey
from routstr_node.nostr.logsafe import failure, relay_name
from routstr_node.nostr.relay_client import publish

log = logging.getLogger(__name__)

ANNOUNCE_EVERY_S = 3600.0
CHECK_EVERY_S = 2.0
RETRY_FIRST_S = 5.0
RETRY_MOST_S = 300.0
MAX_AHEAD_S = 600  # followers refuse events dated more than 15 minutes ahead

Wanted = tuple[str, Tags, str]  # pubkey, tags, content: what the relay should hold


@dataclass
class _Retry:
    """When a relay that failed is asked again: growing waits, so a relay that is down
    costs little and one that recovers is not hit by every node at once."""

    backoff: Backoff = field(default_factory=lambda: Backoff(RETRY_FIRST_S, RETRY_MOST_S))
    retry_at: float = 0.0

    def failed(self) -> float:
        """Wait longer before the next attempt; the wait."""
        wait = self.backoff.next()
        self.retry_at = time.monotonic() + wait
        return wait

    def succeeded(self) -> None:
        self.backoff.reset()
        self.retry_at = 0.0


@dataclass
class _Relay(_Retry):
    accepted: Wanted | None = None
    accepted_at: float = 0.0

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
        may_announce: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self._session = session
        # several processes of one node (one database): only the lease's holder announces
        self._may_announce = may_announce
        self._settings = settings
        self._keys = keys
        self._check_every_s = check_every_s
        self._relays: dict[str, _Relay] = {}
        self._withdrawals: dict[str, _Retry] = {}
        self._record: AnnouncedFile | None = None
        self._warned_no_url = False
        self._last_created_at = 0

    async def run(self) -> None:
        """Check and publish until cancelled; a failing round is logged, the next runs."""
        while True:
            try:
                if self._may_announce is None or await self._may_announce():
                    await self.check()
            except Exception as exc:
                log.warning("nostr announcement: this round failed: %s", type(exc).__name__)
            await asyncio.sleep(self._check_every_s)

    async def check(self) -> None:
        """Publish to every relay whose copy is missing, outdated or an hour old; withdraw
        the announcement from every relay that holds one it should not."""
        settings = self._settings()
        record = self._recorded(settings.node.data_dir)
        relays = list(dict.fromkeys(settings.nostr.relays)) if self._announcing(settings) else []
        if not relays:
            self._relays.clear()  # switched on again: announced afresh at once
        if not relays and not record.relays:
            self._withdrawals.clear()
            return
        key = self._keys.key(settings)
        self._forget_other_keys(record, key.pubkey)
        stale = [url for url in record.relays if url not in relays]
        self._withdrawals = {url: self._withdrawals.get(url) or _Retry() for url in stale}
        now = time.monotonic()
        withdraw = [url for url, retry in self._withdrawals.items() if now >= retry.retry_at]
        wanted = (key.pubkey, *announcement(settings, key.pubkey)) if relays else None
        self._relays = {url: self._relays.get(url) or _Relay() for url in relays}
        due = [url for url, relay in self._relays.items() if wanted and relay.due(wanted, now)]
        if not due and not withdraw:
            return
        jobs = []
        if withdraw:
            # announced nowhere now: the address is withdrawn, every version up to now.
            # Still announced elsewhere: only the copies the dropped relays hold, by id,
            # and a newer version goes to every relay kept (a follower that saw the
            # deletion of a copy the kept relays hold too lists the node again from it)
            everywhere = wanted is None
            deleted_at = self._next_created_at()
            jobs += [self._withdraw(record, url, key, deleted_at, everywhere) for url in withdraw]
            if not everywhere:  # except those waiting for a retry after a failure
                due = [url for url, relay in self._relays.items() if now >= relay.retry_at]
        if wanted is not None and due:
            # replaceable: a relay keeps the newest, so each version is strictly newer than
            # every event before it, withdrawals included
            _, tags, content = wanted
            event = sign(
                key.secret,
                created_at=self._next_created_at(),
                kind=KIND,
                tags=tags,
                content=content,
            )
            jobs += [self._publish(record, url, event, wanted) for url in due]
        await asyncio.gather(*jobs)

    def _next_created_at(self) -> int:
        """Strictly newer than every event signed before, in this process or an earlier
        one; but never far ahead of the clock (a clock that was wrong and is right again):
        followers refuse events dated ahead, and the node would stay hidden."""
        now = int(time.time())
        created_at = self._last_created_at + 1
        if created_at > now + MAX_AHEAD_S:
            log.warning(
                "nostr: the last event was dated %d s ahead of the clock; dating by the clock",
                created_at - now,
            )
            created_at = now
        self._last_created_at = max(now, created_at)
        return self._last_created_at

    def _announcing(self, settings: Settings) -> bool:
        """Whether the node is to be announced (says once why not, if only the URL lacks)."""
        if not settings.nostr.announce or not settings.nostr.relays:
            return False
        if not settings.node.public_url:
            if not self._warned_no_url:
                log.warning(
                    "nostr: announce is on but node.public_url is empty: the node is not"
                    " announced until public_url says where clients reach it"
                )
                self._warned_no_url = True
            return False
        self._warned_no_url = False
        return True

    def _recorded(self, data_dir: Path) -> AnnouncedFile:
        """What the relays hold, as recorded in ``data_dir`` (read once per data dir)."""
        if self._record is None or self._record.data_dir != data_dir:
            self._record = AnnouncedFile(data_dir)
            self._last_created_at = max(self._last_created_at, self._record.last_created_at)
        return self._record

    def _forget_other_keys(self, record: AnnouncedFile, pubkey: str) -> None:
        """Announcements made with a key the node no longer has cannot be withdrawn."""
        for url, entry in list(record.relays.items()):
            if entry.pubkey != pubkey:
                log.warning(
                    "nostr: %s holds an announcement made with the node's previous key;"
                    " without that key it cannot be withdrawn, so it is left to the relay",
                    relay_name(url),
                )
                record.withdrawn(url)

    async def _withdraw(
        self, record: AnnouncedFile, url: str, key: NodeKey, created_at: int, everywhere: bool
    ) -> None:
        entry, retry = record.relays[url], self._withdrawals[url]
        tags = withdrawal(entry.pubkey, entry.d, entry.event_ids, by_address=everywhere)
        event = sign(key.secret, created_at=created_at, kind=DELETION, tags=tags, content=WITHDRAWN)
        if not await self._sent(url, event, retry, "withdrawing the announcement from"):
            return
        record.withdrawn(url, event)
        self._withdrawals.pop(url, None)
        log.info("nostr: withdrew the announcement from %s (event %s)", relay_name(url), event.id)

    async def _publish(self, record: AnnouncedFile, url: str, event: Event, wanted: Wanted) -> None:
        relay = self._relays[url]
        record.sending(url, event)  # before it goes: a lost answer still leaves it to withdraw
        if not await self._sent(url, event, relay, "announcing to"):
            return
        relay.accepted, relay.accepted_at = wanted, time.monotonic()
        record.accepted(url, event)
        log.info("nostr: announced on %s (event %s)", relay_name(url), event.id)

    async def _sent(self, url: str, event: Event, retry: _Retry, doing: str) -> bool:
        """Whether ``url`` accepted ``event``; a failure is logged and asked again later."""
        try:
            await publish(self._session, url, event)
        except Exception as exc:
            log.warning(
                "nostr: %s %s failed: %s; retrying in %.0f s",
                doing,
                relay_name(url),
                failure(exc),
                retry.failed(),
            )
            return False
        retry.succeeded()
        return True
