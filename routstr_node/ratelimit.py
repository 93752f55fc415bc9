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
    ) -> None:
        self.limits = (per_minute, per_hour, per_day)
        self._clock = clock
        # key → [(window start, count) per window]
        self._counts: dict[str, list[tuple[int, int]]] = {}

    def configure(self, per_minute: int, per_hour: int, per_day: int) -> None:
        self.limits = (per_minute, per_hour, per_day)

    def hit(self, key: str) -> Verdict:
        now = self._clock()
        if len(self._counts) > _MAX_KEYS:
            self._forget_old(now)
        slots = self._counts.get(key) or [(0, 0)] * len(_WINDOWS)
        current = []
        for (start, count), size in zip(slots, _WINDOWS, strict=True):
            window_start = int(now // size * size)
            current.append((window_start, count if start == window_start else 0))
        blocked = [
            i
            for i, ((_, count), limit) in enumerate(zip(current, self.limits, strict=True))
            if count >= limit
        ]
        if blocked:
            i = max(blocked, key=lambda j: _WINDOWS[j])
            retry = int(current[i][0] + _WINDOWS[i] - now) + 1
            self._counts[key] = current
            return Verdict(False, self.limits[0], 0, retry, retry)
        current = [(start, count + 1) for start, count in current]
        self._counts[key] = current
        remaining = min(
            limit - count for (_, count), limit in zip(current, self.limits, strict=True)
        )
        reset = int(current[0][0] + _WINDOWS[0] - now) + 1
        return Verdict(True, self.limits[0], max(remaining, 0), reset, 0)

    def _forget_old(self, now: float) -> None:
        day = int(now // 86400 * 86400)
        self._counts = {k: v for k, v in self._counts.items() if v[2][0] == day}
