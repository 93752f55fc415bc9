"""``routstr-node migrate`` moves the usage records and chat sessions too: they live in
files of their own beside the ledger, and a node on PostgreSQL reads them from there."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from support.ecash import EcashFactory
from support.postgres import temporary_database
from support.wallets import fund, open_wallet

from routstr_node.demo.mint import LocalMint
from routstr_node.records import UsageRecord
from routstr_node.records.postgres_store import PostgresUsageStore
from routstr_node.records.sqlite_store import USAGE_FILE, SqliteUsageStore
from routstr_node.sessions.postgres_store import PostgresSessionStore
from routstr_node.sessions.store import SESSIONS_FILE, SqliteSessionStore

ROUTSTR_NODE = Path(sys.executable).parent / "routstr-node"


def _record(n: int, reservation_id: int | None) -> UsageRecord:
    return UsageRecord(
        request_id=f"req-{n}", created=1_765_000_000 + n, account_id=1 + n % 2, mode="account",
        route="/v1/chat/completions", model="gpt-test", provider="p" if n else None,
        status=200 if n % 3 else 502, latency_ms=10 + n, first_byte_ms=None if n else 4,
        input_tokens=n, output_tokens=2 * n, units=0, unit=None, cost_msat=1000 * n,
        reservation_id=reservation_id,
    )  # fmt: skip


async def test_records_and_sessions_move_with_the_ledger(
    tmp_path: Path, ecash: EcashFactory, mint: LocalMint
) -> None:
    data_dir = tmp_path / "node"
    async with open_wallet(data_dir, [mint.url]) as node:
        await fund(node, ecash, mint.url, 100)
    records = [_record(n, n + 1 if n != 2 else None) for n in range(7)]
    usage = SqliteUsageStore(data_dir / USAGE_FILE)
    await usage.open()
    await usage.add(records)
    await usage.set_checked_through(6)
    await usage.close()
    chats = SqliteSessionStore(data_dir / SESSIONS_FILE)
    await chats.open()
    turns = [{"role": "user", "content": "hi ü"}, {"role": "assistant", "content": "hello"}]
    await chats.append(1, "s-1", turns, 1_765_000_100, 50, 0)
    await chats.append(1, "s-1", turns[:1], 1_765_000_200, 50, 0)
    await chats.append(2, "s-2", turns, 1_765_000_300, 50, 0)
    kept = await chats.export()
    await chats.close()
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\ndata_dir = "{data_dir}"\n[mints]\ntrusted = ["{mint.url}"]\n')

    async with temporary_database() as url:
        child = await asyncio.create_subprocess_exec(
            str(ROUTSTR_NODE), "migrate", "--to", url, "--config", str(config),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await child.communicate()
        assert child.returncode == 0, err.decode()[-2000:]
        copied = json.loads(out)["copied"]
        assert copied["usage_records"] == 7 and copied["sessions"] == 2

        moved = PostgresUsageStore(url)
        await moved.open()
        try:
            assert [r for _, r in await moved.written_after(0, 100)] == records
            assert await moved.checked_through() == 6
        finally:
            await moved.close()
        shared = PostgresSessionStore(url)
        await shared.open()
        try:
            assert sorted(await shared.export(), key=lambda s: s.id) == sorted(
                kept, key=lambda s: s.id
            )
            assert await shared.messages(1, "s-1", 0) == [*turns, turns[0]]
            summary = await shared.summary(1, "s-1", 0)
            assert summary is not None and summary.created == 1_765_000_100
        finally:
            await shared.close()
