"""Request counts shared by the node processes of one database, for the rate limiter.

The store only counts; ``routstr_node.ratelimit.RateLimiter`` decides what a count means.
Only a shared store (PostgreSQL) implements this: one SQLite process counts in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable


@runtime_checkable
class RequestCounts(Protocol):
    async def count_request(self, key_hash: str, windows: Sequence[tuple[int, int]]) -> list[int]:
        """Add one to ``key_hash``'s count in each (size_s, start) window, in one round
        trip; a window whose start moved on starts again at 1. Returns the counts, in the
        order of ``windows``."""
        ...

    async def uncount_request(self, key_hash: str, windows: Sequence[tuple[int, int]]) -> None:
        """Take back the one ``count_request`` added (a refused request is not counted)."""
        ...

    async def forget_request_counts(self, now: int) -> int:
        """Delete the windows that ended before ``now``; how many were deleted."""
        ...
