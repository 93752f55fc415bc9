"""The usage records' store on varied records: paging a history by `before` walks every
record of the account once, newest first; the admin groups add up to the records; the
median latency is the records' own; sessions keep their newest turns, from a question.
Each on SQLite and on PostgreSQL (a database of its own per example, then dropped)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
import tempfile
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routstr_node.records.model import Grouping, RecordFilter, UsageRecord
from routstr_node.records.postgres_store import PostgresUsageStore
from routstr_node.records.sqlite_store import SqliteUsageStore
from routstr_node.records.store import UsageStore
from routstr_node.sessions.postgres_store import PostgresSessionStore
from routstr_node.sessions.store import SessionStore, SqliteSessionStore

SERVER = os.environ.get("ROUTSTR_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
KINDS = ("sqlite", "postgres")

DAY = 86400
BASE = 1_750_000_000

records_strategy = st.lists(
    st.tuples(
        st.integers(1, 3),  # account
        st.sampled_from(["m-a", "m-b", "m-c"]),
        st.sampled_from(["p1", "p2", None]),
        st.sampled_from([200, 200, 200, 400, 502]),
        st.integers(0, 5 * DAY),  # created after BASE
        st.one_of(st.none(), st.integers(0, 5000)),  # latency
        st.integers(0, 10**9),  # cost msat
    ),
    max_size=60,
)


def _records(
    drawn: list[tuple[int, str, str | None, int, int, int | None, int]],
) -> list[UsageRecord]:
    return [
        UsageRecord(
            request_id=f"req-{i}",
            created=BASE + created,
            account_id=account,
            mode="account",
            route="/v1/chat/completions",
            model=model,
            provider=provider,
            status=status,
            latency_ms=latency,
            first_byte_ms=latency,
            input_tokens=i,
            output_tokens=2 * i,
            units=0,
            unit=None,
            cost_msat=cost,
            reservation_id=i + 1,
        )
        for i, (account, model, provider, status, created, latency, cost) in enumerate(drawn)
    ]


@asynccontextmanager
async def _database() -> AsyncIterator[str]:
    name = f"routstr_test_usage_{os.getpid()}_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(f"{SERVER}/postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield f"{SERVER}/{name}"
    finally:
        admin = await asyncpg.connect(f"{SERVER}/postgres")
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@asynccontextmanager
async def _usage_store(kind: str) -> AsyncIterator[UsageStore]:
    store: UsageStore
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            store = SqliteUsageStore(Path(tmp) / "usage.sqlite3")
            await store.open()
            try:
                yield store
            finally:
                await store.close()
        return
    async with _database() as url:
        store = PostgresUsageStore(url)
        await store.open()
        try:
            yield store
        finally:
            await store.close()


@asynccontextmanager
async def _session_store(kind: str) -> AsyncIterator[SessionStore]:
    store: SessionStore
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            store = SqliteSessionStore(Path(tmp) / "sessions.sqlite3")
            await store.open()
            try:
                yield store
            finally:
                await store.close()
        return
    async with _database() as url:
        store = PostgresSessionStore(url)
        await store.open()
        try:
            yield store
        finally:
            await store.close()


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drawn=records_strategy, page=st.integers(1, 7))
def test_history_pages_and_usage_groups_add_up(
    kind: str, drawn: list[tuple[int, str, str | None, int, int, int | None, int]], page: int
) -> None:
    records = _records(drawn)

    async def check() -> None:
        async with _usage_store(kind) as store:
            await store.add(records)
            await store.add(records[:3])  # the same reservations again: kept once
            for account in (1, 2, 3):
                seen: list[str] = []
                before = None
                while True:
                    found, more = await store.history(account, page, before)
                    seen += [r.request_id for r in found]
                    if not more:
                        break
                    before = found[-1].request_id
                own = [r.request_id for r in records if r.account_id == account]
                assert seen == own[::-1]
            for group_by, key_of in (
                (Grouping.MODEL, lambda r: r.model),
                (Grouping.PROVIDER, lambda r: r.provider or ""),
                (Grouping.DAY, lambda r: _day(r.created)),
            ):
                groups = {g.key: g for g in await store.usage(group_by, RecordFilter())}
                expected: dict[str, list[UsageRecord]] = defaultdict(list)
                for r in records:
                    expected[key_of(r)].append(r)
                assert set(groups) == set(expected)
                for key, members in expected.items():
                    g = groups[key]
                    assert g.requests == len(members)
                    assert g.errors == sum(r.status >= 400 for r in members)
                    assert g.earnings_msat == sum(r.cost_msat for r in members)
                    assert g.input_tokens == sum(r.input_tokens for r in members)
                    timed = sorted(r.latency_ms for r in members if r.latency_ms is not None)
                    median = timed[(len(timed) - 1) // 2] if timed else None
                    assert g.latency_ms_p50 == median
            since = BASE + 2 * DAY
            window = await store.requests(RecordFilter(since=since, model="m-a"), 1000)
            assert [r.request_id for r in window] == [
                r.request_id for r in records[::-1] if r.created >= since and r.model == "m-a"
            ]
            assert await store.known_reservations([1, 2, 10**6]) == {
                r.reservation_id for r in records[:2] if r.reservation_id is not None
            }
            removed = await store.remove_older_than(BASE + DAY)
            assert removed == sum(r.created < BASE + DAY for r in records)

    asyncio.run(check())


def _day(created: int) -> str:
    return dt.datetime.fromtimestamp(created, dt.UTC).strftime("%Y-%m-%d")


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    turns=st.lists(st.integers(1, 3), min_size=1, max_size=8),  # user messages a turn
    max_messages=st.integers(1, 9),
)
def test_sessions_keep_the_newest_messages_from_a_question(
    kind: str, turns: list[int], max_messages: int
) -> None:
    async def check() -> None:
        async with _session_store(kind) as store:
            everything: list[dict[str, str]] = []
            for n, asked in enumerate(turns):
                added = [{"role": "user", "content": f"q{n}.{k}"} for k in range(asked)]
                added.append({"role": "assistant", "content": f"a{n}"})
                everything += added
                await store.append(7, "s", added, BASE + n, max_messages, 0)
            kept = await store.messages(7, "s", 0)
            assert len(kept) <= max_messages
            assert kept == everything[len(everything) - len(kept) :]
            if kept:
                assert kept[0]["role"] == "user"
            # the newest window that starts at a question is what is kept
            window = everything[-max_messages:]
            while window and window[0]["role"] != "user":
                window = window[1:]
            assert kept == window
            assert await store.messages(8, "s", 0) == []  # another account's: none
            [summary] = await store.sessions(7, 0)
            assert (summary.id, summary.messages) == ("s", len(kept))
            assert await store.sessions(7, BASE + len(turns)) == []  # all expired
            assert await store.delete(7, "s") and not await store.delete(7, "s")

    asyncio.run(check())


@pytest.mark.parametrize("kind", KINDS)
async def test_a_full_record_replaces_one_rebuilt_from_the_ledger(kind: str) -> None:
    """Another process rebuilt a record still in this one's batch: the full one wins,
    and a full record is never replaced."""
    [full] = _records([(1, "m-a", "p1", 200, 0, 40, 7000)])
    rebuilt = dataclasses.replace(
        full, latency_ms=None, first_byte_ms=None, input_tokens=0, output_tokens=0
    )
    async with _usage_store(kind) as store:
        await store.add([rebuilt])
        await store.add([full])
        await store.add([dataclasses.replace(full, latency_ms=None, status=500)])
        await store.add([dataclasses.replace(full, latency_ms=99)])
        assert await store.requests(RecordFilter(), 10) == [full]
