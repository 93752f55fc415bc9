"""A stopped node's SQLite ledger moved into an empty PostgreSQL database, whole.

Every row keeps its id (the journal names reservations and operations by id), the seed
moves from data_dir into the database (every process derives from it), and the copy is
one transaction: a failure leaves the database empty. The SQLite file is only read.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import asyncpg

from wallet.postgres.store import PostgresStore
from wallet.seed import load_or_create_seed
from wallet.sqlite.database import Database
from wallet.sqlite.store import DB_FILE

# in the order their references need (accounts and operations before what names them)
TABLES = (
    "accounts",
    "operations",
    "reservations",
    "journal",
    "proofs",
    "counters",
    "operation_outputs",
    "outgoing_tokens",
    "invoices",
    "payouts",
    "node_settings",
)
_MONEY_TABLES = ("accounts", "proofs", "operations", "journal", "invoices")


class CannotMigrate(Exception):
    """The move cannot start (no ledger, a database that is not empty): nothing moved."""


async def migrate_to_postgres(data_dir: Path, url: str) -> dict[str, int]:
    """Copy the ledger in ``data_dir`` into the empty database at ``url``; rows per table."""
    path = data_dir / DB_FILE
    if not path.exists():
        raise CannotMigrate(f"no wallet database in {data_dir}")
    source = Database(path)  # brings an older file to the newest schema first
    await source.open()
    await source.close()
    seed = load_or_create_seed(data_dir)
    target = PostgresStore(url)
    await target.open()  # the schema, made on an empty database
    try:
        async with target.pool.acquire() as conn, conn.transaction():
            for table in _MONEY_TABLES:
                if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table})"):
                    raise CannotMigrate(f"the database is not empty: {table} has rows")
            if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM wallet_seed)"):
                raise CannotMigrate("the database is not empty: it has a wallet seed")
            await conn.execute("INSERT INTO wallet_seed (id, seed) VALUES (1, $1)", seed.hex())
            copied: dict[str, int] = {}
            with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as lite:
                for table in TABLES:
                    copied[table] = await _copy(lite, conn, table)
                earnings = lite.execute("SELECT amount_msat FROM earnings WHERE id = 1").fetchone()
            await conn.execute("UPDATE earnings SET amount_msat = $1 WHERE id = 1", earnings[0])
            # every account names its latest journal entry, as in the file
            await conn.execute(
                "UPDATE accounts a SET last_journal_id ="
                " (SELECT MAX(id) FROM journal j WHERE j.account_id = a.id)"
            )
            for table in TABLES:
                if table in ("counters", "operation_outputs", "node_settings", "invoices"):
                    continue
                await conn.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                    f" COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
                )
    finally:
        await target.close()
    return copied


async def _copy(lite: sqlite3.Connection, conn: asyncpg.Connection, table: str) -> int:
    """The rows of ``table``: the columns both sides have (the file's own order)."""
    theirs = [r[1] for r in lite.execute(f"PRAGMA table_info({table})")]
    ours = {
        r[0]
        for r in await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = $1", table
        )
    }
    columns = [c for c in theirs if c in ours and c != "last_journal_id"]
    rows = lite.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall()
    if rows:
        await conn.copy_records_to_table(table, records=rows, columns=columns)
    return len(rows)
