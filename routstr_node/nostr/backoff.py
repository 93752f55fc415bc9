"""Waits between retries that grow on each failure, with jitter so that nodes restarted
together do not knock on a recovering relay in step."""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, first_s: float, most_s: float) -> None:
        self._first_s = first_s
        self._most_s = most_s
        self._next_s = first_s

    def next(self) -> float:
        """The wait before the next attempt; each call doubles the one after (up to most)."""
        wait = self._next_s
        self._next_s = min(self._next_s * 2, self._most_s)
        return wait * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        """After a success: the next failure waits ``first_s`` again."""
        self._next_s = self._first_s
