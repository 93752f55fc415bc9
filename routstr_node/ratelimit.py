"""Fixed-window request limits per minute, hour and day, per payer or client address."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

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
    ) -> None:
        self.limits = (per_minute, per_hour, per_day)
        self._clock = clock
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
