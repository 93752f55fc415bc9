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


class _Forwarder:
    """A TCP path to the PostgreSQL server that the test can cut: the database lost."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._pipe, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 5432)
        self.writers += [writer, up_writer]

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
            dst.close()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        await self.server.wait_closed()


async def test_a_lost_database_counts_in_memory_and_answers() -> None:
    """No 500 and no 503 from the limiter: it counts in this process's memory, from the
    counts it last saw (a paid request meets the lost database in its payment)."""
    async with temporary_database() as url:
        forwarder = _Forwarder()
        port = await forwarder.start()
        store = PostgresStore(url.replace("127.0.0.1:5432", f"127.0.0.1:{port}"))
        await store.open()
        try:
            limiter = RateLimiter(3, 100, 1000, clock=lambda: 1_699_999_980.0 + 30, shared=store)
            assert (await limiter.count("ip:1")).remaining == 2
            await forwarder.cut()
            verdicts = [await limiter.count("ip:1") for _ in range(3)]
            assert [v.allowed for v in verdicts] == [True, True, False]
        finally:
            await store.close()
