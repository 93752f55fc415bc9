"""A charged request never goes unrecorded: records missing for the ledger's charges are
rebuilt from them (CONTRACT §11), once, and a full record is never touched. On a shared
store the mark stays before recent charges, whose records other processes may still
be writing."""

from __future__ import annotations

from pathlib import Path

from support.ecash import EcashFactory
from support.wallets import fund, open_wallet

from routstr_node.demo.mint import LocalMint
from routstr_node.records.model import RecordFilter, UsageRecord
from routstr_node.records.rebuild import rebuild_lost_records
from routstr_node.records.sqlite_store import SqliteUsageStore
from wallet import RequestTag

CHARGES = [3000, 0, 2500, 1200, 0]  # 0: released (an upstream failure), nothing to rebuild


def _tag(n: int) -> RequestTag:
    return RequestTag(f"req-{n}", "/v1/chat/completions", "m", "p")


async def test_missing_records_of_charged_requests_are_rebuilt_once(
    tmp_path: Path, mint: LocalMint, ecash: EcashFactory
) -> None:
    async with open_wallet(tmp_path / "node", [mint.url]) as wallet:
        account = await fund(wallet, ecash, mint.url, 1000)
        reservations = []
        for n, charge in enumerate(CHARGES):
            reservation = await wallet.ledger.reserve(account.account_id, 10_000)
            await wallet.ledger.settle(reservation, charge, _tag(n))
            reservations.append(reservation)
        store = SqliteUsageStore(tmp_path / "usage.sqlite3")
        await store.open()
        try:
            written = UsageRecord(
                "req-0", 1, account.account_id, "account", "/v1/chat/completions", "m", "p",
                200, 12, 5, 10, 20, 0, None, 3000, reservations[0],
            )  # fmt: skip
            await store.add([written])  # the first request's batch was written; not the rest

            assert await rebuild_lost_records(store, wallet.ledger, 30) == 2
            found = {r.request_id: r for r in await store.requests(RecordFilter(), 100)}
            assert set(found) == {"req-0", "req-2", "req-3"}
            assert found["req-0"] == written
            for n in (2, 3):
                record = found[f"req-{n}"]
                assert record.cost_msat == CHARGES[n]
                assert (record.route, record.model, record.provider) == (
                    "/v1/chat/completions",
                    "m",
                    "p",
                )
                assert (record.account_id, record.mode, record.status) == (
                    account.account_id,
                    "account",
                    200,
                )
                assert record.latency_ms is None and record.reservation_id == reservations[n]
            assert await store.checked_through() == reservations[3]
            assert await rebuild_lost_records(store, wallet.ledger, 30) == 0

            # a shared store: a charge just made is rebuilt (its full record, still in
            # another process's batch, takes its place later), the mark does not pass it
            late = await wallet.ledger.reserve(account.account_id, 10_000)
            await wallet.ledger.settle(late, 700, _tag(9))
            assert await rebuild_lost_records(store, wallet.ledger, 30, shared=True) == 1
            assert await store.checked_through() == reservations[3]
            full = UsageRecord(
                "req-9", 2, account.account_id, "account", "/v1/chat/completions", "m", "p",
                200, 30, 8, 1, 2, 0, None, 700, late,
            )  # fmt: skip
            await store.add([full])
            assert (await store.requests(RecordFilter(), 1))[0] == full
        finally:
            await store.close()
