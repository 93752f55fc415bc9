"""Fixed-window request limits per minute, hour and day, per payer or client address.

One process (SQLite) counts in memory. When several processes share a PostgreSQL ledger,
the counts live in the database (``wallet.RequestCounts``): one round trip per counted
request, so that a payer's limit holds across every process of the node. The limiter
decides; the store only counts.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from wallet import RequestCounts, StoreUnavailable

log = logging.getLogger(__name__)

_WINDOWS = (60, 3600, 86400)
_MAX_KEYS = 100_000


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    reset_s: int  # seconds until the tightest window resets
    retry_after_s: int


class RateLimiter:
    def __init__(
        self,
        per_minute: int,
        per_hour: int,
        per_day: int,
        clock: Callable[[], float] = time.time,
        max_keys: int = _MAX_KEYS,
        shared: RequestCounts | None = None,
    ) -> None:
        self.limits = (per_minute, per_hour, per_day)
        self._clock = clock
        self._shared = shared
        self._max_keys = max_keys
        # key → [start, count] for each window, flat: one small list per payer, updated
        # in place (this runs on every paid request)
        self._counts: dict[str, list[int]] = {}

    def configure(self, per_minute: int, per_hour: int, per_day: int) -> None:
        self.limits = (per_minute, per_hour, per_day)

    def hit(self, key: str) -> Verdict:
        """Count one request for ``key`` unless a window is full (every paid request)."""
        now = self._clock()
        if len(self._counts) > self._max_keys:
            self._forget_old(now)
        slots = self._counts.get(key)
        if slots is None:
            slots = self._counts[key] = [0] * (2 * len(_WINDOWS))
        blocked = -1
        for i, size in enumerate(_WINDOWS):
            start = int(now // size * size)
            if slots[2 * i] != start:
                slots[2 * i] = start
                slots[2 * i + 1] = 0
            if slots[2 * i + 1] >= self.limits[i]:
                blocked = i  # the longest full window decides when to retry
        if blocked >= 0:
            retry = int(slots[2 * blocked] + _WINDOWS[blocked] - now) + 1
            return Verdict(False, self.limits[0], 0, retry, retry)
        remaining = None
        for i, limit in enumerate(self.limits):
            slots[2 * i + 1] += 1
            left = limit - slots[2 * i + 1]
            remaining = left if remaining is None or left < remaining else remaining
        reset = int(slots[0] + _WINDOWS[0] - now) + 1
        return Verdict(True, self.limits[0], max(remaining or 0, 0), reset, 0)

    async def count(self, key: str) -> Verdict:
        """``hit``, counted across every process of the node when the store is shared.

        If the database cannot be reached, the request is counted in this process's memory
        instead (from the counts it last saw) and goes on: the limit still holds per
        process, a free route (/v1/models) still answers, and a paid request meets the
        lost database in its payment and is answered 503 ``database_unavailable`` there,
        the one place that owns that answer. Refusing every request with 503 here would
        turn a database outage into a whole-node outage for no gain in safety.
        """
        if self._shared is None:
            return self.hit(key)
        now = self._clock()
        windows = [(size, int(now // size * size)) for size in _WINDOWS]
        digest = bucket_hash(key)
        try:
            counts = await self._shared.count_request(digest, windows)
        except StoreUnavailable:
            log.warning("rate limits: the database cannot be reached; counting in memory")
            return self.hit(key)
        verdict = self._judge(now, windows, counts)
        if not verdict.allowed:  # a refused request is not counted, as in memory
            counts = [n - 1 for n in counts]
            # one count too many in a window that ends soon is not worth a 503
            with contextlib.suppress(StoreUnavailable):
                await self._shared.uncount_request(digest, windows)
        if len(self._counts) > self._max_keys:
            self._forget_old(now)
        # what the database said, kept here too: ``knows``, ``full`` and a fall back to
        # memory read it
        self._counts[key] = [
            v for (_, start), n in zip(windows, counts, strict=True) for v in (start, n)
        ]
        return verdict

    def _judge(self, now: float, windows: list[tuple[int, int]], counts: list[int]) -> Verdict:
        """The verdict on counts that already include this request (``hit``'s rules)."""
        blocked = -1
        for i, n in enumerate(counts):
            if n > self.limits[i]:
                blocked = i  # the longest full window decides when to retry
        if blocked >= 0:
            size, start = windows[blocked]
            retry = int(start + size - now) + 1
            return Verdict(False, self.limits[0], 0, retry, retry)
        remaining = min(limit - n for limit, n in zip(self.limits, counts, strict=True))
        size, start = windows[0]
        return Verdict(True, self.limits[0], max(remaining, 0), int(start + size - now) + 1, 0)

    async def forget_old_windows(self) -> None:
        """The background round: windows that ended leave the database (in memory they go
        when a key's window moves on, or when too many keys are counted)."""
        if self._shared is not None:
            await self._shared.forget_request_counts(int(self._clock()))

    def full(self, key: str) -> Verdict | None:
        """The refusal ``hit`` would give ``key`` now, without counting anything."""
        slots = self._counts.get(key)
        if slots is None:
            return None
        now = self._clock()
        refusal = None
        for i, size in enumerate(_WINDOWS):
            if slots[2 * i] == int(now // size * size) and slots[2 * i + 1] >= self.limits[i]:
                retry = int(slots[2 * i] + size - now) + 1
                refusal = Verdict(False, self.limits[0], 0, retry, retry)
        return refusal

    def knows(self, key: str) -> bool:
        """Whether ``key`` was counted before (and not forgotten since)."""
        return key in self._counts

    def __len__(self) -> int:
        """How many payers and addresses are counted now."""
        return len(self._counts)

    def _forget_old(self, now: float) -> None:
        """Down to half the cap, so that this runs once per that many new keys, not on
        every request of a flood of made-up ones. Forgotten first: keys not seen today,
        then keys seen once today (a flood's, each losing one count), then the least
        busy; a payer at its limit is the last to go."""
        keep = self._max_keys // 2
        day = int(now // 86400 * 86400)
        counts = {k: v for k, v in self._counts.items() if v[4] == day}
        if len(counts) > keep:
            counts = {k: v for k, v in counts.items() if v[5] > 1}
        if len(counts) > keep:
            counts = dict(sorted(counts.items(), key=lambda kv: kv[1][5])[-keep:])
        self._counts = counts


def bucket_hash(key: str) -> str:
    """What the database knows of a payer or an address: never the key itself (a token's
    bucket is already its hash; an account id or an address need not be stored either)."""
    return hashlib.sha256(key.encode()).hexdigest()
