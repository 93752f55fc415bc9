"""Fixed-window limits against a plain model of them, over any sequence of hits and clocks."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from routstr_node.ratelimit import RateLimiter

WINDOWS = (60, 3600, 86400)


class Model:
    """Per window: the hits allowed in its current fixed window; a hit counts only if allowed."""

    def __init__(self, limits: tuple[int, int, int]) -> None:
        self.limits = limits
        self.hits: dict[str, list[float]] = {}

    def hit(self, key: str, now: float) -> tuple[bool, int, int]:
        times = self.hits.setdefault(key, [])
        counts = [sum(1 for t in times if t // w == now // w) for w in WINDOWS]
        full = [
            i for i, (c, limit) in enumerate(zip(counts, self.limits, strict=True)) if c >= limit
        ]
        if full:
            w = WINDOWS[max(full)]
            return False, 0, int((now // w) * w + w - now) + 1
        times.append(now)
        remaining = min(limit - c - 1 for c, limit in zip(counts, self.limits, strict=True))
        return True, max(remaining, 0), int((now // 60) * 60 + 60 - now) + 1


@given(
    st.tuples(
        st.integers(min_value=1, max_value=4),
        st.integers(min_value=1, max_value=8),
        st.integers(min_value=1, max_value=12),
    ),
    st.lists(
        st.tuples(st.sampled_from(["a", "b"]), st.integers(min_value=0, max_value=200_000)),
        max_size=40,
    ),
)
def test_the_limiter_agrees_with_the_model(
    limits: tuple[int, int, int], steps: list[tuple[str, int]]
) -> None:
    clock = [1_700_000_000.0]
    limiter = RateLimiter(*limits, clock=lambda: clock[0])
    model = Model(limits)
    for key, advance in sorted(steps, key=lambda s: s[1]):
        now = 1_700_000_000.0 + advance / 10
        clock[0] = now
        verdict = limiter.hit(key)
        allowed, remaining, until = model.hit(key, now)
        assert verdict.allowed == allowed
        assert verdict.limit == limits[0]
        if allowed:
            assert (verdict.remaining, verdict.reset_s, verdict.retry_after_s) == (
                remaining,
                until,
                0,
            )
        else:
            assert (verdict.remaining, verdict.retry_after_s) == (0, until)


def test_full_tells_a_refusal_without_counting() -> None:
    now = [1_000_000.0]
    limiter = RateLimiter(2, 100, 1000, clock=lambda: now[0])
    assert limiter.full("k") is None
    limiter.hit("k")
    assert limiter.full("k") is None
    limiter.hit("k")
    for _ in range(3):  # asking does not count
        refusal = limiter.full("k")
        assert refusal is not None and not refusal.allowed and refusal.retry_after_s >= 1
    assert limiter.hit("k").allowed is False
    now[0] += 60
    assert limiter.full("k") is None  # a new minute


def test_a_flood_of_new_keys_is_forgotten_in_bulk_and_the_busy_keys_stay() -> None:
    """Past the cap the limiter drops to half of it at once, keys seen once first, so a
    flood of made-up keys costs one sweep per half a cap of them (not one per request)
    and wipes no payer's counts."""
    now = [1_000_000.0]
    limiter = RateLimiter(100, 2, 1000, clock=lambda: now[0], max_keys=100)
    limiter.hit("payer")
    limiter.hit("payer")
    assert not limiter.hit("payer").allowed  # its hour is full
    sizes = []
    for n in range(1000):
        limiter.hit(f"made-up-{n}")
        sizes.append(len(limiter))
        now[0] += 0.5  # across minutes too
    assert max(sizes) <= 101
    sweeps = sum(1 for a, b in itertools.pairwise(sizes) if b < a)
    assert sweeps <= 1000 // 50 + 1
    assert limiter.knows("payer") and not limiter.knows("made-up-0")
    assert not limiter.hit("payer").allowed, "the flood did not reset the payer's hour"
