"""A node wallet (``WalletService``) on a real mint for tests, and read-only looks at its files.

The database is only ever read here, through a separate read-only connection (SQLite
file, or the test's PostgreSQL database when the data_dir names one: support.postgres);
every change goes through the node's own code.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from mints.directory import MintDirectory
from support.ecash import EcashFactory
from support.postgres import database_url_for, query_postgres
from wallet.recovery import RecoveryReport
from wallet.service import DB_FILE, NewAccount, WalletService


@asynccontextmanager
async def recovered_wallet(
    data_dir: Path, mint_urls: Sequence[str]
) -> AsyncIterator[tuple[WalletService, RecoveryReport]]:
    """Open a node wallet on ``data_dir`` (first mint primary) and what its recovery did."""
    mints = MintDirectory(list(mint_urls))
    service = WalletService(data_dir, mints, database_url_for(data_dir))
    try:
        report = await service.open()
        assert report is not None
        yield service, report
    finally:
        await service.close()
        await mints.close()


@asynccontextmanager
async def open_wallet(data_dir: Path, mint_urls: Sequence[str]) -> AsyncIterator[WalletService]:
    """Open a node wallet on ``data_dir`` trusting ``mint_urls`` (first primary)."""
    async with recovered_wallet(data_dir, mint_urls) as (service, _):
        yield service


async def fund(
    service: WalletService, ecash: EcashFactory, mint_url: str, amount_sat: int
) -> NewAccount:
    """A new sk- account funded with a fresh nutshell-made token of ``amount_sat``."""
    token = await ecash.token(amount_sat, mint_url=mint_url)
    return await service.create_account(await service.mints.check_token(token))


class LedgerRefused(Exception):
    """The database refused a statement (a trigger or a constraint), whichever it is."""


def tamper(data_dir: Path, sql: str) -> None:
    """Change the wallet's database behind the node's back, as an intruder or a bad
    restore would; LedgerRefused when the schema does not let it."""
    url = database_url_for(data_dir)
    if url:
        try:
            query_postgres(url, sql)
        except asyncpg.PostgresError as exc:
            raise LedgerRefused(str(exc)) from None
        return
    with closing(sqlite3.connect(data_dir / DB_FILE, timeout=10, isolation_level=None)) as conn:
        try:
            conn.execute(sql)
        except sqlite3.IntegrityError as exc:
            raise LedgerRefused(str(exc)) from None


def query(data_dir: Path, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Rows of a read-only query on the wallet's database."""
    url = database_url_for(data_dir)
    if url:
        return query_postgres(url, sql, params)
    uri = f"file:{data_dir / DB_FILE}?mode=ro"
    with closing(sqlite3.connect(uri, uri=True)) as conn:
        return [tuple(row) for row in conn.execute(sql, tuple(params))]


@dataclass(frozen=True)
class LedgerState:
    """Everything money-related the ledger stores, to compare before and after."""

    accounts: tuple[tuple[Any, ...], ...]
    journal_rows: int
    earnings_msat: int
    unspent_sat: int
    operations: tuple[tuple[Any, ...], ...]

    @property
    def total_balance_msat(self) -> int:
        return sum(int(a[2]) for a in self.accounts)


def ledger_state(data_dir: Path) -> LedgerState:
    accounts = query(
        data_dir, "SELECT id, kind, balance_msat, reserved_msat FROM accounts ORDER BY id"
    )
    journal_rows = query(data_dir, "SELECT COUNT(*) FROM journal")[0][0]
    earnings = query(data_dir, "SELECT amount_msat FROM earnings WHERE id = 1")[0][0]
    unspent = query(
        data_dir, "SELECT COALESCE(SUM(amount), 0) FROM proofs WHERE state = 'unspent'"
    )[0][0]
    operations = query(data_dir, "SELECT id, kind, state FROM operations ORDER BY id")
    return LedgerState(
        tuple(accounts), int(journal_rows), int(earnings), int(unspent), tuple(operations)
    )
