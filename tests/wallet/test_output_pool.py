"""The output pool: every counter once, outputs derived ahead equal to those derived on demand.

Outputs derived ahead must be exactly the NUT-13 outputs of their counters (the seed
restores them), must never be handed out twice, and must not outlive a restart in a
way that skips or reuses a counter that was written down.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mints.outputs import PreparedOutput, prepare_outputs
from wallet.operations import OutputRole, OutputRow, ReceiveIntent
from wallet.output_pool import OutputPool
from wallet.sqlite.store import SqliteStore

SEED = bytes(range(64))
KEYSET = "01" + "ab" * 32  # a v2 keyset id (HMAC derivation)
KEYSET_V1 = "00ad268c4d1f5826"  # a v1 id (BIP32 derivation)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    database = SqliteStore(tmp_path)
    await database.open()
    yield database
    await database.close()


async def _derive_ahead_fully(pool: OutputPool, keyset_id: str) -> None:
    never = asyncio.get_running_loop().create_future()
    await pool.derive_ahead(keyset_id, until=never)
    never.cancel()


def _expected(keyset_id: str, first: int, amounts: list[int]) -> list[PreparedOutput]:
    return prepare_outputs(SEED, keyset_id, first, amounts)


@pytest.mark.parametrize("keyset_id", [KEYSET, KEYSET_V1])
async def test_outputs_derived_ahead_are_the_counters_own_outputs(
    db: SqliteStore, keyset_id: str
) -> None:
    pool = OutputPool(db, SEED, ahead=5)
    assert await pool.take(keyset_id, [1, 2]) == _expected(keyset_id, 0, [1, 2])
    await _derive_ahead_fully(pool, keyset_id)
    assert pool.ready(keyset_id) == 5  # counters 2..6
    taken = await pool.take(keyset_id, [4, 8, 16, 32, 64, 128, 256])  # 5 ready, 2 on demand
    assert taken == _expected(keyset_id, 2, [4, 8, 16, 32, 64, 128, 256])


async def test_deriving_ahead_stops_when_the_mint_answers(db: SqliteStore) -> None:
    pool = OutputPool(db, SEED, ahead=1000)
    await pool.take(KEYSET, [1])
    answer = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(answer.set_result, None)
    await pool.derive_ahead(KEYSET, until=answer)
    assert 1 <= pool.ready(KEYSET) < 1000  # some were derived, then it stopped
    taken = await pool.take(KEYSET, [1] * 1000)
    assert taken == _expected(KEYSET, 1, [1] * 1000)


async def test_a_restart_continues_after_the_written_counters(db: SqliteStore) -> None:
    pool = OutputPool(db, SEED, ahead=8)
    outputs = await pool.take(KEYSET, [1, 2, 4])
    await _derive_ahead_fully(pool, KEYSET)  # counters 3..10 derived, never written down
    rows = [OutputRow(OutputRole.KEEP, o) for o in outputs]
    await db.write_receive(
        ReceiveIntent(1, None, 0), "http://mint", rows, "a-token", [], lambda _: None
    )

    restarted = OutputPool(db, SEED, ahead=8)
    (first,) = await restarted.take(KEYSET, [8])
    # the derived-ahead counters were never sent to a mint: deriving them again is safe
    assert first == _expected(KEYSET, 3, [8])[0]


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(st.one_of(st.integers(min_value=1, max_value=9), st.just(0)), min_size=1, max_size=12)
)
async def test_takes_and_derivations_in_any_order_never_repeat_a_counter(
    tmp_path: Path, steps: list[int]
) -> None:
    """Concurrent takes while derivations run: each counter once, in its own outputs."""
    database = SqliteStore(tmp_path / f"pool-{id(steps)}")
    await database.open()
    try:
        pool = OutputPool(database, SEED, ahead=6)
        await pool.take(KEYSET, [1])
        answer = asyncio.get_running_loop().create_future()
        ahead = asyncio.ensure_future(pool.derive_ahead(KEYSET, until=answer))
        taken: list[PreparedOutput] = []
        for count in steps:
            if count == 0:
                await asyncio.sleep(0)
                continue
            taken += await pool.take(KEYSET, [1] * count)
        answer.set_result(None)
        await ahead
        counters = [o.counter for o in taken]
        assert len(set(counters)) == len(counters)
        assert 0 not in counters
        assert taken == [_expected(KEYSET, o.counter, [1])[0] for o in taken]
    finally:
        await database.close()
