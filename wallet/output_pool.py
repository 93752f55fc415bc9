"""NUT-13 outputs handed out once each, some derived ahead while the node waits on a mint.

Deriving an output (its secret, blinding factor, hash-to-curve and B_) costs about 50 µs,
so a redeem's six cost 0.3 ms before its swap can be written down. Every swap leaves the
node idle for a mint's round trip; deriving the next outputs then takes that work off
the next redeem. An output derived ahead and never used is harmless: its counter was
never written down, so after a restart it is derived again, and it was never sent.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from mints.errors import ProtocolError
from mints.outputs import BlindedSecret, PreparedOutput, blind_counter
from wallet.store import WalletStore

AHEAD = 24  # outputs kept ready per keyset: a few redeems' worth
CLAIM = 256  # counters a process claims at a time when others share the database


class OutputPool:
    """Counters (never the same one twice, in this process or another sharing the
    database: there each claims blocks of counters) and their blinded secrets."""

    def __init__(self, store: WalletStore, seed: bytes, *, ahead: int = AHEAD) -> None:
        self._store = store
        self._seed = seed
        self._ahead = ahead
        self._next: dict[str, int] = {}
        self._end: dict[str, int | None] = {}  # the claimed block's end (None: no end)
        self._ready: dict[str, deque[BlindedSecret]] = {}
        self._lock = asyncio.Lock()

    async def take(self, keyset_id: str, amounts: list[int]) -> list[PreparedOutput]:
        """Outputs for ``amounts``, ready ones first, in counter order."""
        if keyset_id not in self._next:
            async with self._lock:
                if keyset_id not in self._next:
                    first, end = await self._store.claim_counters(keyset_id, CLAIM)
                    self._next[keyset_id] = first
                    self._end[keyset_id] = end
                    self._ready[keyset_id] = deque()
        ready = self._ready[keyset_id]
        while len(ready) + self._left(keyset_id) < len(amounts):
            async with self._lock:
                if len(ready) + self._left(keyset_id) >= len(amounts):
                    break
                # the rest of this block stays unused: counters are never handed out twice
                first, end = await self._store.claim_counters(keyset_id, max(CLAIM, len(amounts)))
                self._next[keyset_id] = first
                self._end[keyset_id] = end
                ready.clear()
                if len(amounts) > self._left(keyset_id):
                    raise ProtocolError("the store claimed fewer counters than asked")
        return [
            (ready.popleft() if ready else self._derive(keyset_id)).output(amount)
            for amount in amounts
        ]

    async def derive_ahead(self, keyset_id: str, until: asyncio.Future[Any]) -> None:
        """Derive outputs for later, one per loop step, until ``until`` is done or enough are.

        Never raises but for cancellation: it runs beside a mint call it must not disturb.
        """
        ready = self._ready.get(keyset_id)
        if ready is None:
            return
        while len(ready) < self._ahead and not until.done() and self._left(keyset_id) > 0:
            try:
                ready.append(self._derive(keyset_id))
            except ProtocolError:  # not derivable ahead: take() raises it where it is handled
                return
            await asyncio.sleep(0)

    def ready(self, keyset_id: str) -> int:
        """How many outputs of this keyset are derived and waiting."""
        return len(self._ready.get(keyset_id, ()))

    def _left(self, keyset_id: str) -> int:
        end = self._end.get(keyset_id)
        return 1 << 62 if end is None else end - self._next[keyset_id]

    def _derive(self, keyset_id: str) -> BlindedSecret:
        counter = self._next[keyset_id]
        self._next[keyset_id] = counter + 1
        return blind_counter(self._seed, keyset_id, counter)
