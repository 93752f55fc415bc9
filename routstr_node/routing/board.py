"""Each provider's health and measured speed, as the provider choice and listings read them.

A provider is `down` after DOWN_AFTER_FAILURES failed attempts in a row (no answer,
timeout, 5xx, 408, 429); any answer makes it active again. A down provider is tried
last, except that once every RETRY_DOWN_AFTER_S one request tries it in its normal
place (a trial), so a provider that came back is found again.

Speed is measured on paid calls: time to the first byte (latency) and output tokens
per second (throughput), the median of the last WINDOW calls, per provider and per
provider and model (:nitro and `sort` compare the same model across providers).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from statistics import median

DOWN_AFTER_FAILURES = 3  # one failure may be the request's; three in a row are the provider's
RETRY_DOWN_AFTER_S = 30.0
WINDOW = 50


class ProviderStatus(StrEnum):
    ACTIVE = "active"
    DOWN = "down"


@dataclass
class _Samples:
    """The last WINDOW values and their median, kept up to date on each new value."""

    values: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))
    median: float | None = None

    def add(self, value: float) -> None:
        self.values.append(value)
        self.median = median(self.values)


@dataclass
class _Speed:
    latency_s: _Samples = field(default_factory=_Samples)
    tokens_per_s: _Samples = field(default_factory=_Samples)


@dataclass
class _Health:
    failures_in_a_row: int = 0
    trial_at: float = 0.0  # when a down provider may next be tried in its normal place


class ProviderBoard:
    """Health and speed by provider (upstream) name; lives as long as the node."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._health: dict[str, _Health] = {}
        self._speed: dict[tuple[str, str | None], _Speed] = {}

    # -- health --------------------------------------------------------------------

    def status(self, name: str) -> ProviderStatus:
        health = self._health.get(name)
        if health is not None and health.failures_in_a_row >= DOWN_AFTER_FAILURES:
            return ProviderStatus.DOWN
        return ProviderStatus.ACTIVE

    def tried_last(self, name: str) -> bool:
        """Down and not due for a trial: goes after the providers that are not."""
        health = self._health.get(name)
        return (
            health is not None
            and health.failures_in_a_row >= DOWN_AFTER_FAILURES
            and self._clock() < health.trial_at
        )

    def trying(self, name: str) -> None:
        """A request puts this down provider in its normal place: the trial is taken,
        the next one is due after another pause."""
        health = self._health.get(name)
        if health is not None and health.failures_in_a_row >= DOWN_AFTER_FAILURES:
            health.trial_at = self._clock() + RETRY_DOWN_AFTER_S

    def failed(self, name: str) -> None:
        """An attempt that got no usable answer (connection, timeout, 5xx, 408, 429)."""
        health = self._health.setdefault(name, _Health())
        health.failures_in_a_row += 1
        if health.failures_in_a_row >= DOWN_AFTER_FAILURES:
            health.trial_at = self._clock() + RETRY_DOWN_AFTER_S

    def answered(self, name: str, model_id: str, latency_s: float) -> None:
        """The provider answered (its first byte after ``latency_s``): it is up."""
        health = self._health.get(name)
        if health is not None:
            health.failures_in_a_row = 0
        for key in ((name, None), (name, model_id)):
            self._speed.setdefault(key, _Speed()).latency_s.add(latency_s)

    def up(self, name: str) -> None:
        """The provider answered, refusing the request (a client error): it is up."""
        health = self._health.get(name)
        if health is not None:
            health.failures_in_a_row = 0

    # -- speed ---------------------------------------------------------------------

    def generated(self, name: str, model_id: str, output_tokens: int, seconds: float) -> None:
        """A paid call's output: ``output_tokens`` written in ``seconds``."""
        if output_tokens <= 0 or seconds <= 0:
            return
        rate = output_tokens / seconds
        for key in ((name, None), (name, model_id)):
            self._speed.setdefault(key, _Speed()).tokens_per_s.add(rate)

    def latency_s(self, name: str, model_id: str | None = None) -> float | None:
        """Median time to the first byte over recent calls (None: not measured yet)."""
        speed = self._speed.get((name, model_id))
        return speed.latency_s.median if speed is not None else None

    def throughput(self, name: str, model_id: str | None = None) -> float | None:
        """Median output tokens per second over recent calls (None: not measured yet)."""
        speed = self._speed.get((name, model_id))
        return speed.tokens_per_s.median if speed is not None else None
