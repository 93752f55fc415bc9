#!/usr/bin/env python3
"""What the operator's books cost on a large ledger: the books read (every unspent
proof and every account with money summed per mint) and a payout's hold and close
(the earnings moved to the payout's account and back, one transaction each), on a
wallet database filled with N accounts and N proofs at three mints.

The books are read by the operator (admin API, command line) and once per payout,
never on a client's request; a hold and a close are writes the node's one writer runs
beside the clients' reservations, so their time is what a client's write may wait.
No mint is involved: the figures are the database's.

    .venv/bin/python scripts/bench_books.py [--accounts 100000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from wallet.sqlite.books import books
from wallet.sqlite.database import Database
from wallet.sqlite.payouts import PayoutKind, PayoutState, close_payout, hold_for_payout

MINTS = ["http://mint-a.example", "http://mint-b.example", "http://mint-c.example"]


def fill(conn: sqlite3.Connection, accounts: int) -> None:
    """N accounts of 1000 sat each and N proofs of 1024 sat, spread over the mints;
    earnings hold what custody holds beyond the accounts."""
    now = int(time.time())
    conn.executemany(
        "INSERT INTO accounts (kind, mint_url, balance_msat, created_at) VALUES ('key', ?, ?, ?)",
        ((MINTS[i % 3], 1_000_000, now) for i in range(accounts)),
    )
    conn.executemany(
        "INSERT INTO proofs (mint_url, keyset_id, amount, secret, c, y, state, created_at)"
        " VALUES (?, '00ab', 1024, ?, '02', ?, 'unspent', ?)",
        (
            (MINTS[i % 3], secrets.token_hex(16), secrets.token_hex(33), now)
            for i in range(accounts)
        ),
    )
    conn.execute("UPDATE earnings SET amount_msat = ? WHERE id = 1", (accounts * 24_000,))


async def bench(accounts: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(Path(tmp) / "wallet.sqlite3")
        await db.open()
        try:
            started = time.perf_counter()
            await db.write(lambda c: fill(c, accounts))
            print(
                f"{accounts} accounts and proofs written in {time.perf_counter() - started:.1f} s"
            )
            reads, holds, closes = [], [], []
            for _ in range(rounds):
                started = time.perf_counter()
                now = await db.read(lambda c: books(c, MINTS))
                reads.append(time.perf_counter() - started)
                assert now.withdrawable_msat > 0
                started = time.perf_counter()
                row = await db.write(
                    lambda c: hold_for_payout(
                        c,
                        kind=PayoutKind.TOKEN,
                        mint_url=MINTS[0],
                        hold_msat=5_000_000,
                        idempotency_key=None,
                        asked_sat=5000,
                        destination=None,
                    )
                )
                holds.append(time.perf_counter() - started)
                started = time.perf_counter()
                payout_id = row.id
                await db.write(lambda c, i=payout_id: close_payout(c, i, PayoutState.FAILED))
                closes.append(time.perf_counter() - started)
        finally:
            await db.close()
    for name, times in (("books read", reads), ("payout hold", holds), ("payout close", closes)):
        print(
            f"{name:>12}: median {statistics.median(times) * 1000:8.2f} ms,"
            f" max {max(times) * 1000:8.2f} ms ({rounds} rounds)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(bench(args.accounts, args.rounds))


if __name__ == "__main__":
    main()
