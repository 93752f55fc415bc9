"""Each provider's health and measured speed, as the provider choice and listings read them.

A provider is `down` after DOWN_AFTER_FAILURES failed attempts in a row (no answer,
timeout, 5xx, 408, 429); any answer makes it active again. A down provider is tried
last, except that once every RETRY_DOWN_AFTER_S one request tries it in its normal
place (a trial), so a provider that came back is found again.

Speed is measured on paid calls: time to the first byte (latency) and output tokens
per second (throughput), the median of the last WINDOW calls of each model at each
provider (:nitro and `sort` compare the same model across providers; a provider's
listing takes all its models' calls together).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from statistics import median

log = logging.getLogger(__name__)

DOWN_AFTER_FAILURES = 3  # one failure may be the request's; three in a row are the provider's
RETRY_DOWN_AFTER_S = 30.0
WINDOW = 50


class ProviderStatus(StrEnum):
    ACTIVE = "active"
    DOWN = "down"


class _Samples:
    """The last WINDOW values; their median is computed when asked, once per change
    (every paid call adds a value, few requests read one)."""

    __slots__ = ("_median", "_values")

    def __init__(self) -> None:
        self._values: deque[float] = deque(maxlen=WINDOW)
        self._median: float | None = None

    def add(self, value: float) -> None:
        self._values.append(value)
        self._median = None

    @property
    def values(self) -> deque[float]:
        return self._values

    @property
    def median(self) -> float | None:
        if self._median is None and self._values:
            self._median = median(self._values)
        return self._median


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
        self._speed: dict[tuple[str, str], _Speed] = {}  # by provider and model

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
            if health.failures_in_a_row == DOWN_AFTER_FAILURES:
                log.warning(
                    "provider '%s' is down: %d attempts in a row failed; tried last from now",
                    name,
                    DOWN_AFTER_FAILURES,
                )

    def answered(self, name: str, model_id: str, latency_s: float) -> None:
        """The provider answered (its first byte after ``latency_s``): it is up."""
        self.up(name)
        self._speed_of(name, model_id).latency_s.add(latency_s)

    def up(self, name: str) -> None:
        """The provider answered (a client error too): it is up."""
        health = self._health.get(name)
        if health is not None and health.failures_in_a_row:
            if health.failures_in_a_row >= DOWN_AFTER_FAILURES:
                log.info("provider '%s' answers again: active", name)
            health.failures_in_a_row = 0

    # -- speed ---------------------------------------------------------------------

    def generated(self, name: str, model_id: str, output_tokens: int, seconds: float) -> None:
        """A paid call's output: ``output_tokens`` written in ``seconds``."""
        if output_tokens > 0 and seconds > 0:
            self._speed_of(name, model_id).tokens_per_s.add(output_tokens / seconds)

    def latency_s(self, name: str, model_id: str | None = None) -> float | None:
        """Median time to the first byte over recent calls, of one model or of all the
        provider's (None: not measured yet)."""
        return self._median(name, model_id, lambda speed: speed.latency_s)

    def throughput(self, name: str, model_id: str | None = None) -> float | None:
        """Median output tokens per second over recent calls, of one model or of all the
        provider's (None: not measured yet)."""
        return self._median(name, model_id, lambda speed: speed.tokens_per_s)

    def _median(
        self, name: str, model_id: str | None, samples: Callable[[_Speed], _Samples]
    ) -> float | None:
        if model_id is not None:
            speed = self._speed.get((name, model_id))
            return samples(speed).median if speed is not None else None
        # the provider as a whole (listings, rarely asked): its models' samples together
        values = [v for (n, _), sp in self._speed.items() if n == name for v in samples(sp).values]
        return median(values) if values else None

    def _speed_of(self, name: str, model_id: str) -> _Speed:
        speed = self._speed.get((name, model_id))
        if speed is None:
            speed = self._speed[(name, model_id)] = _Speed()
        return speed
