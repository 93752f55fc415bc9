"""Admin sessions (cookies) and the brake on password guessing."""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

SESSION_TTL_S = 12 * 3600
MAX_SESSIONS = 1000

FREE_FAILURES = 5  # wrong passwords from one address before it has to wait
FIRST_WAIT_S = 1.0  # then 1 s, 2 s, 4 s … after each further failure
LONGEST_WAIT_S = 300.0
# a wait up to this long is served by holding the answer (a typo costs a pause, and the
# answer is still 401 or 200); a longer one is refused at once with 429 and Retry-After
HOLD_AT_MOST_S = 4.0
FORGET_AFTER_S = 900.0  # an address quiet this long starts afresh
MAX_ADDRESSES = 10_000


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AdminSessions:
    """Session tokens known only by their hash; they end at logout, a password change,
    a restart, or after ``SESSION_TTL_S``."""

    def __init__(
        self, ttl_s: float = SESSION_TTL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._expiry: dict[str, float] = {}

    def start(self) -> str:
        now = self._clock()
        self._expiry = {d: t for d, t in self._expiry.items() if t > now}
        while len(self._expiry) >= MAX_SESSIONS:
            del self._expiry[next(iter(self._expiry))]  # the oldest
        token = secrets.token_urlsafe(32)
        self._expiry[_digest(token)] = now + self._ttl_s
        return token

    def valid(self, token: str) -> bool:
        expiry = self._expiry.get(_digest(token))
        return expiry is not None and expiry > self._clock()

    def end(self, token: str) -> None:
        self._expiry.pop(_digest(token), None)

    def end_all_but(self, token: str | None) -> None:
        kept = _digest(token) if token else None
        self._expiry = {d: t for d, t in self._expiry.items() if d == kept}


@dataclass(slots=True)
class _Attempts:
    failures: int
    last: float


class LoginThrottle:
    """Per address: a few wrong passwords are free, then each one doubles the wait.

    Every attempt gets a turn: the first ones at once, later ones only after the wait
    that the failures before them earned. An attempt counts as failed from the moment
    its turn is given, so guesses sent in parallel are spaced out as if sent one after
    another; a right password clears it.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._by_address: dict[str, _Attempts] = {}

    def turn(self, address: str) -> float | None:
        """Seconds to hold this attempt before its password is checked (0: at once), or
        None when that is longer than ``HOLD_AT_MOST_S`` (see ``wait_s``); a turn given
        counts as a failure until ``succeeded``."""
        now = self._clock()
        attempts = self._current(address, now)
        delay = self._delay(attempts, now)
        if delay > HOLD_AT_MOST_S:
            return None
        if attempts is None:
            if len(self._by_address) >= MAX_ADDRESSES:
                self._forget_quiet(now)
            attempts = self._by_address[address] = _Attempts(0, now)
        attempts.failures += 1
        attempts.last = now + delay
        return delay

    def wait_s(self, address: str) -> int:
        """Whole seconds until this address gets a turn at once (0: now)."""
        now = self._clock()
        return math.ceil(self._delay(self._current(address, now), now))

    def succeeded(self, address: str) -> None:
        self._by_address.pop(address, None)

    def _current(self, address: str, now: float) -> _Attempts | None:
        attempts = self._by_address.get(address)
        if attempts is not None and now - attempts.last > FORGET_AFTER_S:
            return None
        return attempts

    @staticmethod
    def _delay(attempts: _Attempts | None, now: float) -> float:
        if attempts is None or attempts.failures < FREE_FAILURES:
            return 0.0
        wait = min(FIRST_WAIT_S * 2.0 ** (attempts.failures - FREE_FAILURES), LONGEST_WAIT_S)
        return max(0.0, attempts.last + wait - now)

    def _forget_quiet(self, now: float) -> None:
        self._by_address = {
            a: t for a, t in self._by_address.items() if now - t.last <= FORGET_AFTER_S
        }
        while len(self._by_address) >= MAX_ADDRESSES:
            del self._by_address[next(iter(self._by_address))]
