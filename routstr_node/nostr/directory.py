"""The other nodes seen on the relays: the newest announcement per node key, bounded.

One listing per pubkey, whatever its `d` tags: one key cannot fill the directory with
many "nodes" and push the others out.

Relays deliver the same announcement many times (one per relay, again at every
reconnect) and older ones in any order; only news is kept. ``is_news`` is cheap and
runs before the signature check, so duplicates cost no verification.

A node withdraws its announcement with a NIP-09 deletion request (kind 5) signed by the
same key, naming it by id (``e``) or by address (``a``: ``38421:<pubkey>:<d>``, every
version up to the request's date). The listing goes, and the withdrawal is remembered:
the same or an older announcement arriving later is not listed again, a newer one is.
"""

from __future__ import annotations

import time
from typing import Any

from routstr_node.nostr.announcement import (
    DELETION,
    KIND,
    MAX_D_CHARS,
    NodeListing,
    address,
    d_tag,
    listing,
    oversized,
)
from routstr_node.nostr.deletions import Deletions
from routstr_node.nostr.event import Event

MAX_NODES = 1000
# an announcement dated further ahead than this is refused: it would stay "newest" (and
# first in the listing) for as long as its author likes
MAX_CLOCK_SKEW_S = 900


class NodeDirectory:
    def __init__(self, max_nodes: int = MAX_NODES) -> None:
        self._max_nodes = max_nodes
        self._nodes: dict[str, NodeListing] = {}
        self._deleted = Deletions(max_nodes)

    def __len__(self) -> int:
        return len(self._nodes)

    def is_news(self, event: Event, now: float | None = None) -> bool:
        """Whether ``event`` would change the directory (if its signature holds)."""
        if event.kind not in (KIND, DELETION) or oversized(event):
            return False
        if event.created_at > (time.time() if now is None else now) + MAX_CLOCK_SKEW_S:
            return False
        if event.kind == DELETION:
            removes, dates = self._withdrawal(event)
            return removes or bool(dates)
        if self._deleted.covers(event.pubkey, d_tag(event), event.created_at):
            return False
        known = self._nodes.get(event.pubkey)
        if known is None:
            return len(self._nodes) < self._max_nodes or event.created_at > self._oldest()[1]
        # NIP-01: the newer replaces; at the same second the lower id is the one kept
        return (event.created_at, known.event_id) > (known.announced_at, event.id)

    def offer(self, event: Event, now: float | None = None) -> bool:
        """Take a verified announcement or deletion request if it is news; whether it was."""
        if not self.is_news(event, now):
            return False
        key = event.pubkey
        if event.kind == DELETION:
            removes, dates = self._withdrawal(event)
            if removes:
                del self._nodes[key]
            self._deleted.add(key, dates, removes=removes)
            return True
        if key not in self._nodes and len(self._nodes) >= self._max_nodes:
            del self._nodes[self._oldest()[0]]
        self._nodes[key] = listing(event)
        return True

    def clear(self) -> None:
        self._nodes.clear()
        self._deleted.clear()

    def _withdrawal(self, event: Event) -> tuple[bool, dict[str, int]]:
        """What a deletion request does: whether it removes its author's listing, and the
        withdrawals (d → up to which date) to remember. Only the author's own count."""
        prefix = address(event.pubkey, "")
        named = (a[len(prefix) :] for a in event.tag_values("a") if a.startswith(prefix))
        # longer d values are never listed: nothing to withdraw, nothing to remember
        dates = {d: event.created_at for d in named if len(d) <= MAX_D_CHARS}
        known = self._nodes.get(event.pubkey)
        removes = False
        if known is not None and known.event_id in event.tag_values("e"):
            removes = True  # by id: that very announcement, whatever the dates say
            dates[known.d] = max(dates.get(known.d, event.created_at), known.announced_at)
        elif known is not None:
            removes = dates.get(known.d, -1) >= known.announced_at
        return removes, self._deleted.news(event.pubkey, dates, removes=removes)

    def listing(self, own_pubkey: str | None = None) -> list[dict[str, Any]]:
        """Every node, newest announcement first; this node's own marked ``self``."""
        nodes = sorted(self._nodes.values(), key=lambda n: (-n.announced_at, n.pubkey, n.d))
        return [node.to_json(own=node.pubkey == own_pubkey) for node in nodes]

    def _oldest(self) -> tuple[str, int]:
        key, node = min(self._nodes.items(), key=lambda item: item[1].announced_at)
        return key, node.announced_at
