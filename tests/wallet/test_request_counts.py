"""The rate limiter's shared counts on PostgreSQL (``wallet.RequestCounts``), and the
limiter deciding on them: two limiters on one database are one limit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from support.postgres import temporary_database

from routstr_node.ratelimit import RateLimiter, bucket_hash
from wallet.postgres.store import PostgresStore

MINUTE, HOUR, DAY = 60, 3600, 86400


@pytest.fixture
async def store() -> AsyncIterator[PostgresStore]:
    async with temporary_database() as url:
        store = PostgresStore(url)
        await store.open()
        try:
            yield store
        finally:
            await store.close()


def _windows(now: int) -> list[tuple[int, int]]:
    return [(size, now // size * size) for size in (MINUTE, HOUR, DAY)]


async def test_counts_per_window_and_restart_when_a_window_moves(store: PostgresStore) -> None:
    now = 1_700_000_000
    assert await store.count_request("k", _windows(now)) == [1, 1, 1]
    assert await store.count_request("k", _windows(now)) == [2, 2, 2]
    assert await store.count_request("other", _windows(now)) == [1, 1, 1]
    later = now + MINUTE  # the next minute, most likely the same hour and day
    counts = await store.count_request("k", _windows(later))
    assert counts[0] == 1
    assert counts[1:] == [
        1 if w_later != w_now else 3
        for (_, w_now), (_, w_later) in zip(_windows(now)[1:], _windows(later)[1:], strict=True)
    ]
    await store.uncount_request("k", _windows(later))
    assert await store.count_request("k", _windows(later)) == counts


async def test_concurrent_counts_are_each_counted_once(store: PostgresStore) -> None:
    now = 1_700_000_000
    counted = await asyncio.gather(*(store.count_request("k", _windows(now)) for _ in range(40)))
    assert sorted(c[0] for c in counted) == list(range(1, 41))


async def test_ended_windows_are_forgotten(store: PostgresStore) -> None:
    now = 1_700_006_400  # a day's start: every window begins here
    await store.count_request("k", _windows(now))
    assert await store.forget_request_counts(now + MINUTE - 1) == 0
    assert await store.forget_request_counts(now + MINUTE) == 1
    assert await store.forget_request_counts(now + DAY) == 2
    assert await store.count_request("k", _windows(now + DAY)) == [1, 1, 1]


async def test_two_limiters_on_one_database_are_one_limit(store: PostgresStore) -> None:
    clock = [1_699_999_980.0 + 30]  # 30 s into a minute
    a = RateLimiter(3, 100, 1000, clock=lambda: clock[0], shared=store)
    b = RateLimiter(3, 100, 1000, clock=lambda: clock[0], shared=store)
    verdicts = [await (a, b)[i % 2].count("payer:1") for i in range(5)]
    assert [v.allowed for v in verdicts] == [True, True, True, False, False]
    assert [v.remaining for v in verdicts] == [2, 1, 0, 0, 0]
    assert verdicts[3].retry_after_s == 31  # to the next minute
    assert a.knows("payer:1") and b.knows("payer:1")
    # a refused request is not counted: the hour still holds 3
    clock[0] += 60
    assert (await a.count("payer:1")).remaining == 2
    # the key itself is never stored, only its hash
    keys = await store.pool.fetch("SELECT DISTINCT key_hash FROM request_counts")
    assert [r[0] for r in keys] == [bucket_hash("payer:1")]
