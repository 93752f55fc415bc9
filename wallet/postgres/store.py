"""The wallet's store on PostgreSQL: several node processes on one ledger.

Every method is one transaction on a connection of the pool. Where SQLite has one writer,
here row locks and conditional updates keep money right across processes: a balance is
changed by one conditional UPDATE, a reservation settles once, a proof is locked by one
operation, a token has one live operation, and a completion locks its operation's row.
A transaction that meets a deadlock or a serialization failure runs again, whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

import asyncpg

from mints.models import Proof
from wallet.errors import AccountNotFound
from wallet.operations import (
    IssueIntent,
    Operation,
    OperationResult,
    OperationState,
    OutputRow,
    ReceiveIntent,
    SpendIntent,
)
from wallet.payout_records import Books, PayoutKind, PayoutRow
from wallet.postgres import completions as txn
from wallet.postgres import custody as sql
from wallet.postgres import invoices as invoices_sql
from wallet.postgres import ledger as ledger_sql
from wallet.postgres import payouts as payouts_sql
from wallet.postgres import request_counts as counts_sql
from wallet.postgres.ledger import Conn
from wallet.postgres.schema import migrate
from wallet.postgres.settings import audit_snapshot, load_settings, save_settings
from wallet.records import (
    AccountRow,
    ChargedRequest,
    Credit,
    InvoiceRecord,
    LedgerSnapshot,
    NewInvoiceRow,
    PasswordOrigin,
    RefundRow,
    RequestTag,
    Settlement,
    StoredProof,
    StoredSettings,
    Withdrawal,
)
from wallet.selection import Coin
from wallet.store_errors import StoreUnavailable, redacted

log = logging.getLogger(__name__)
T = TypeVar("T")

_RETRIES = 5
_CONNECT_TIMEOUT_S = 10.0
_POOL_SIZE = 10
# a process is alive while it holds this advisory lock (namespace, hash of its name) on a
# connection of its own: the server lets go of it the moment the process dies or loses
# its connection, so another process takes its work up at once, with no lease to wait out
_LIFE_LOCK = 0x52535452
_LIFE_CHECK_S = 1.0  # how soon a process that lost the database takes its life lock again
# what losing the database while serving looks like: answered 503, nothing charged
_CONNECTION_LOST = (
    OSError,
    ConnectionError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
)


# the operations and open reservations a process may take over: its own, none's, or
# those of a process whose lease ran out (it died, or lost the database that long)
def _taken_over(table: str) -> str:
    """The rows of ``table`` this process ($1) may take up: its own, nobody's, and those
    of a process that is gone (its life lock is free)."""
    return (
        f"({table}.holder IS NULL OR {table}.holder = $1 OR NOT EXISTS (SELECT 1 FROM pg_locks"
        f" WHERE locktype = 'advisory' AND classid = {_LIFE_LOCK}"
        f" AND objid = hashtext({table}.holder)::oid AND granted))"
    )


class PostgresStore:
    """:class:`wallet.store.WalletStore` on a PostgreSQL database."""

    shared = True

    def __init__(self, url: str, *, pool_size: int = _POOL_SIZE) -> None:
        self.url = url
        self._pool_size = pool_size
        self._pool: Any = None
        self.holder = uuid.uuid4().hex  # this process, as its rows name it
        self._life: Any = None  # the connection holding this process's life lock
        self._keeping: asyncio.Task[None] | None = None

    @property
    def pool(self) -> Any:
        """The connection pool (asyncpg.Pool), for the node's other stores to share."""
        if self._pool is None:
            raise RuntimeError("database is closed")
        return self._pool

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.url,
                min_size=1,
                max_size=self._pool_size,
                timeout=_CONNECT_TIMEOUT_S,
                command_timeout=60,
                server_settings={"routstr.holder": self.holder},
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
            raise StoreUnavailable(
                f"cannot open the database {redacted(self.url)}: {exc or type(exc).__name__}"
            ) from None
        except TimeoutError:
            raise StoreUnavailable(
                f"cannot open the database {redacted(self.url)}: no answer in"
                f" {_CONNECT_TIMEOUT_S:.0f} s"
            ) from None
        async with self._pool.acquire() as conn:
            await migrate(conn)
        self._life = await self._pool.acquire()
        await self._life.execute(
            "SELECT pg_advisory_lock($1, hashtext($2))", _LIFE_LOCK, self.holder
        )
        self._keeping = asyncio.create_task(self._keep_life(), name="postgres-life-lock")

    async def _keep_life(self) -> None:
        """Take the life lock again once the database is back: without it the other
        processes would take this living one for dead and settle its holds."""
        while True:
            await asyncio.sleep(_LIFE_CHECK_S)
            try:
                await self._hold_life()
            except (*_CONNECTION_LOST, asyncpg.PostgresError) as exc:
                log.warning("the database connection of this process's life lock: %s", exc)
                with contextlib.suppress(*_CONNECTION_LOST, asyncpg.PostgresError):
                    self._life.terminate()
                    await self._pool.release(self._life)
                with contextlib.suppress(*_CONNECTION_LOST, asyncpg.PostgresError):
                    self._life = await self._pool.acquire(timeout=_CONNECT_TIMEOUT_S)

    async def _hold_life(self) -> None:
        """Take the life lock on its connection unless that holds it already (a try: a
        session the server has not yet seen die may hold it still, and then the process
        is alive to the others anyway)."""
        held = await self._life.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"
            " AND classid = $1 AND objid = hashtext($2)::oid AND granted"
            " AND pid = pg_backend_pid())",
            _LIFE_LOCK,
            self.holder,
            timeout=_CONNECT_TIMEOUT_S,
        )
        if not held and await self._life.fetchval(
            "SELECT pg_try_advisory_lock($1, hashtext($2))", _LIFE_LOCK, self.holder
        ):
            log.info("this process holds its life lock again")

    async def close(self) -> None:
        if self._keeping is not None:
            self._keeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeping
            self._keeping = None
        if self._pool is not None:
            if self._life is not None:
                with contextlib.suppress(*_CONNECTION_LOST):
                    await self._life.execute(
                        "SELECT pg_advisory_unlock($1, hashtext($2))", _LIFE_LOCK, self.holder
                    )
                    await self._pool.release(self._life)
                self._life = None
            await self._pool.close()
            self._pool = None

    async def _write(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """``fn`` in one transaction; run again, whole, after a deadlock or a
        serialization failure (both roll everything back)."""
        for attempt in range(_RETRIES):
            try:
                with _reachable(self.url):
                    async with self.pool.acquire() as conn, conn.transaction():
                        return await fn(conn)
            except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
                if attempt == _RETRIES - 1:
                    raise
                await asyncio.sleep(0.005 * (attempt + 1))
        raise AssertionError("unreachable")

    async def _read(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """``fn``'s statements on one snapshot."""
        with _reachable(self.url):
            async with (
                self.pool.acquire() as conn,
                conn.transaction(isolation="repeatable_read", readonly=True),
            ):
                return await fn(conn)

    async def _one(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """A read of one statement: no transaction around it."""
        with _reachable(self.url):
            async with self.pool.acquire() as conn:
                return await fn(conn)

    # -- the seed and counters -----------------------------------------------------------

    async def seed(self) -> bytes:
        candidate = os.urandom(64).hex()

        async def seed(c: Conn) -> str:
            await c.execute(
                "INSERT INTO wallet_seed (id, seed) VALUES (1, $1) ON CONFLICT DO NOTHING",
                candidate,
            )
            return str(await c.fetchval("SELECT seed FROM wallet_seed WHERE id = 1"))

        stored = bytes.fromhex(await self._write(seed))
        if len(stored) != 64:
            raise ValueError("the database's wallet seed must be 64 bytes")
        return stored

    async def nostr_key(self, candidate: bytes) -> bytes:
        async def key(c: Conn) -> str:
            await c.execute(
                "INSERT INTO nostr_key (id, secret) VALUES (1, $1) ON CONFLICT DO NOTHING",
                candidate.hex(),
            )
            return str(await c.fetchval("SELECT secret FROM nostr_key WHERE id = 1"))

        stored = bytes.fromhex(await self._write(key))
        if len(stored) != 32:
            raise ValueError("the database's Nostr key must be 32 bytes")
        return stored

    async def claim_counters(self, keyset_id: str, count: int) -> tuple[int, int | None]:
        first = await self._write(lambda c: sql.claim_counters(c, keyset_id, count))
        return first, first + count

    # -- the rate limiter's counts (wallet.request_counts.RequestCounts) ----------------

    async def count_request(self, key_hash: str, windows: Sequence[tuple[int, int]]) -> list[int]:
        return await self._one(lambda c: counts_sql.count_request(c, key_hash, windows))

    async def uncount_request(self, key_hash: str, windows: Sequence[tuple[int, int]]) -> None:
        await self._one(lambda c: counts_sql.uncount_request(c, key_hash, windows))

    async def forget_request_counts(self, now: int) -> int:
        return await self._one(lambda c: counts_sql.forget_request_counts(c, now))

    # -- accounts ----------------------------------------------------------------------

    async def account(self, account_id: int) -> AccountRow:
        return await self._one(lambda c: ledger_sql.get_account(c, account_id))

    async def account_by_key_hash(self, digest: str) -> AccountRow | None:
        return await self._one(lambda c: ledger_sql.find_account(c, "key_hash", digest))

    async def account_by_admin_key_hash(self, digest: str) -> AccountRow | None:
        return await self._one(lambda c: ledger_sql.find_account(c, "admin_key_hash", digest))

    async def open_account_by_key_hash(self, digest: str) -> AccountRow | None:
        async def find(c: Conn) -> AccountRow | None:
            row = await ledger_sql.find_account(c, "key_hash", digest)
            return row or await ledger_sql.find_account(c, "admin_key_hash", digest)

        row = await self._read(find)
        if row is not None:
            await self._write(lambda c: ledger_sql.mark_keys_used(c, row.id))
        return row

    async def account_of_token(
        self, token_id: str, signatures: frozenset[tuple[str, str]]
    ) -> AccountRow | None:
        return await self._read(lambda c: ledger_sql.account_of_token(c, token_id, signatures))

    async def account_with_unused_keys(
        self, account_id: int, key_hash: str, admin_key_hash: str
    ) -> AccountRow | None:
        return await self._one(
            lambda c: ledger_sql.account_with_unused_keys(c, account_id, key_hash, admin_key_hash)
        )

    async def account_made_by_token(self, token_id: str) -> int | None:
        return await self._one(lambda c: sql.account_made_by_token(c, token_id))

    async def token_account_and_redeeming(
        self, token_id: str, signatures: frozenset[tuple[str, str]]
    ) -> tuple[AccountRow | None, bool]:
        async def both(c: Conn) -> tuple[AccountRow | None, bool]:
            account = await ledger_sql.account_of_token(c, token_id, signatures)
            return account, await sql.pending_receive_of_token(c, token_id) is not None

        return await self._read(both)

    async def rotate_api_key(self, account_id: int, digest: str) -> None:
        async def rotate(c: Conn) -> None:
            if not await ledger_sql.set_key_hash(c, account_id, digest):
                raise AccountNotFound(f"no account {account_id}")
            await ledger_sql.journal(c, "rotate", account_id=account_id)

        await self._write(rotate)

    # -- reservations and earnings -------------------------------------------------------

    async def reserve(self, account_id: int, amount_msat: int, purpose: str) -> int:
        return await self._write(lambda c: ledger_sql.reserve(c, account_id, amount_msat, purpose))

    async def reserve_if_untouched(
        self, account_id: int, amount_msat: int, purpose: str
    ) -> int | None:
        return await self._write(
            lambda c: ledger_sql.reserve_if_untouched(c, account_id, amount_msat, purpose)
        )

    async def settle(
        self,
        reservation_id: int,
        charge_msat: int,
        destination: str = "earnings",
        *,
        tag: RequestTag | None = None,
    ) -> Settlement:
        return await self._write(
            lambda c: ledger_sql.settle(
                c, reservation_id, charge_msat, destination=destination, tag=tag
            )
        )

    async def reservation(self, reservation_id: int) -> Settlement:
        return await self._one(lambda c: ledger_sql.reservation_state(c, reservation_id))

    async def settle_open_reservations(self) -> int:
        """Open request reservations of processes that are gone (never those another
        process serving now holds): charged what they delivered, the rest released."""

        async def settle_all(c: Conn) -> int:
            rows = await c.fetch(
                "SELECT id, delivered_msat FROM reservations"
                f" WHERE state = 'open' AND purpose = 'request' AND {_taken_over('reservations')}"
                " FOR UPDATE SKIP LOCKED",
                self.holder,
            )
            for row in rows:
                await ledger_sql.settle(c, int(row[0]), int(row[1]))
            return len(rows)

        return await self._write(settle_all)

    async def record_delivered(
        self, reservation_id: int, delivered_msat: int, tag: RequestTag | None = None
    ) -> None:
        await self._write(
            lambda c: ledger_sql.record_delivered(c, reservation_id, delivered_msat, tag)
        )

    async def charged_requests_after(
        self, after_reservation_id: int, settled_since: int, limit: int
    ) -> list[ChargedRequest]:
        return await self._one(
            lambda c: ledger_sql.charged_requests_after(
                c, after_reservation_id, settled_since, limit
            )
        )

    async def last_reservation_id(self) -> int:
        return int(
            await self._one(lambda c: c.fetchval("SELECT COALESCE(MAX(id), 0) FROM reservations"))
        )

    async def earnings_msat(self) -> int:
        return int(
            await self._one(lambda c: c.fetchval("SELECT amount_msat FROM earnings WHERE id = 1"))
        )

    async def book_remainder_to_earnings(self, account_id: int, kind: str) -> int:
        async def book(c: Conn) -> int:
            balance = await c.fetchval(
                "SELECT balance_msat FROM accounts WHERE id = $1 FOR UPDATE", account_id
            )
            if balance is None:
                raise AccountNotFound(f"no account {account_id}")
            remainder = int(balance) % 1000
            await ledger_sql.debit_to_earnings(c, account_id, remainder, kind=kind)
            return remainder

        return await self._write(book)

    # -- custody -------------------------------------------------------------------------

    async def coins_and_balance(
        self, mint_url: str, account_id: int, per_amount: int | None
    ) -> tuple[list[Coin], bool, int]:
        async def read(c: Conn) -> tuple[list[Coin], bool, int]:
            coins, left_out = await sql.selectable_coins(c, mint_url, per_amount)
            return coins, left_out, (await ledger_sql.get_account(c, account_id)).balance_msat

        return await self._read(read)

    async def operations_in_flight(self, mint_url: str) -> bool:
        return await self._one(lambda c: sql.has_operations_in_flight(c, mint_url))

    async def held_mint_urls(self) -> list[str]:
        return await self._one(sql.held_mint_urls)

    async def write_spend(
        self,
        intent: SpendIntent,
        mint_url: str,
        hold_msat: int,
        purpose: str,
        rows: Sequence[OutputRow],
        proof_ids: Sequence[int],
        quote_id: str | None,
        on_written: Callable[[int], None],
    ) -> tuple[int, list[StoredProof]] | None:
        try:
            return await self._write(
                lambda c: txn.write_spend(
                    c, intent, mint_url, hold_msat, purpose, rows, proof_ids, quote_id, on_written
                )
            )
        except sql.SelectionConflict:
            return None

    async def write_receive(
        self,
        intent: ReceiveIntent,
        mint_url: str,
        rows: Sequence[OutputRow],
        token_id: str,
        foreign_inputs: Sequence[Proof],
        on_written: Callable[[int], None],
    ) -> int:
        return await self._write(
            lambda c: txn.write_receive(
                c, intent, mint_url, rows, token_id, foreign_inputs, on_written
            )
        )

    async def write_issue(
        self, intent: IssueIntent, mint_url: str, rows: Sequence[OutputRow], quote_id: str
    ) -> int | None:
        return await self._write(lambda c: txn.write_issue(c, intent, mint_url, rows, quote_id))

    async def send_exact(
        self,
        account_id: int,
        mint_url: str,
        amount_sat: int,
        proof_ids: Sequence[int],
        purpose: str,
        make_token: Callable[[list[Proof]], str],
    ) -> str | None:
        try:
            return await self._write(
                lambda c: txn.send_exact(
                    c, account_id, mint_url, amount_sat, proof_ids, purpose, make_token
                )
            )
        except sql.SelectionConflict:
            return None

    async def complete_receive(
        self,
        op: Operation,
        proofs: Sequence[StoredProof],
        credited_msat: int,
        reserve_msat: int | None,
    ) -> Credit:
        return await self._write(
            lambda c: txn.complete_receive(c, op, proofs, credited_msat, reserve_msat)
        )

    async def received_credit(self, op_id: int) -> Credit:
        return await self._one(lambda c: txn.credited(c, op_id))

    async def complete_send(
        self,
        op: Operation,
        keep: Sequence[StoredProof],
        send: Sequence[StoredProof],
        token: str,
    ) -> str:
        return await self._write(lambda c: txn.complete_send(c, op, keep, send, token))

    async def complete_melt(self, op: Operation, change: Sequence[StoredProof]) -> int | None:
        return await self._write(lambda c: txn.complete_melt(c, op, change))

    async def complete_issue(
        self, op: Operation, proofs: Sequence[StoredProof], credited_msat: int
    ) -> None:
        await self._write(lambda c: txn.complete_issue(c, op, proofs, credited_msat))

    async def revert_spend(self, op_id: int, error: str) -> None:
        await self._write(lambda c: txn.revert_spend(c, op_id, error))

    async def fail_operation(self, op_id: int, error: str) -> None:
        await self._write(
            lambda c: sql.finish_operation(c, op_id, OperationState.FAILED, error=error[:500])
        )

    async def fail_issue(self, op_id: int, invoice_id: str, invoice_state: str, error: str) -> None:
        await self._write(lambda c: txn.fail_issue(c, op_id, invoice_id, invoice_state, error))

    async def mark_inputs_lost(self, op_id: int, error: str) -> None:
        await self._write(lambda c: txn.mark_inputs_lost(c, op_id, error))

    async def operation(self, op_id: int) -> Operation:
        return await self._one(lambda c: sql.operation(c, op_id))

    async def operation_outputs(self, op_id: int) -> list[OutputRow]:
        return await self._one(lambda c: sql.operation_outputs(c, op_id))

    async def operation_inputs(self, op_id: int) -> list[StoredProof]:
        return await self._one(lambda c: sql.operation_inputs(c, op_id))

    async def operation_result(self, op_id: int) -> OperationResult:
        return await self._one(lambda c: sql.operation_result(c, op_id))

    async def operation_token(self, op_id: int) -> str:
        return await self._one(lambda c: sql.operation_token(c, op_id))

    async def pending_operations(self) -> list[Operation]:
        return await self._one(
            lambda c: sql.pending_operations(c, _taken_over("operations"), self.holder)
        )

    async def stale_operation_ids(self, written_by: int) -> list[int]:
        return await self._one(
            lambda c: sql.stale_operation_ids(c, written_by, _taken_over("operations"), self.holder)
        )

    async def pending_receive_of_token(self, token_id: str) -> int | None:
        return await self._one(lambda c: sql.pending_receive_of_token(c, token_id))

    # -- tokens out ----------------------------------------------------------------------

    async def withdrawals(self, account_id: int, limit: int) -> list[Withdrawal]:
        return await self._one(lambda c: sql.withdrawals(c, account_id, limit))

    async def outgoing_tokens(self, account_id: int, purpose: str) -> list[tuple[str, int]]:
        return await self._one(lambda c: sql.outgoing_tokens(c, account_id, purpose))

    async def last_refund_if_untouched(self, account_id: int) -> RefundRow | None:
        return await self._read(lambda c: sql.last_refund_if_untouched(c, account_id))

    # -- invoices ------------------------------------------------------------------------

    async def insert_invoice(self, invoice: NewInvoiceRow) -> None:
        async def insert(c: Conn) -> None:
            if invoice.account_id is not None:
                await ledger_sql.get_account(c, invoice.account_id)
            await invoices_sql.insert_invoice(c, invoice)

        await self._write(insert)

    async def invoice(self, invoice_id: str) -> InvoiceRecord | None:
        return await self._one(lambda c: invoices_sql.invoice(c, invoice_id))

    async def open_invoice_ids(self) -> list[str]:
        return await self._one(invoices_sql.open_invoice_ids)

    async def invoice_quote_id(self, invoice_id: str) -> str:
        return await self._one(lambda c: invoices_sql.quote_id(c, invoice_id))

    async def invoice_operation_id(self, invoice_id: str) -> int | None:
        return await self._one(lambda c: invoices_sql.operation_id(c, invoice_id))

    async def invoice_secret_hash(self, invoice_id: str) -> str | None:
        return await self._one(lambda c: invoices_sql.secret_hash(c, invoice_id))

    async def set_invoice_state(self, invoice_id: str, state: str, when: tuple[str, ...]) -> bool:
        return await self._write(lambda c: invoices_sql.set_state(c, invoice_id, state, when))

    async def deliver_invoice_keys(
        self, invoice_id: str, key_hash: str, admin_key_hash: str, reissue_since: int
    ) -> AccountRow | None:
        return await self._write(
            lambda c: txn.deliver_invoice_keys(
                c, invoice_id, key_hash, admin_key_hash, reissue_since
            )
        )

    # -- payouts, books, leases ----------------------------------------------------------

    async def books(self, mint_urls: list[str]) -> Books:
        return await self._read(lambda c: payouts_sql.books(c, mint_urls))

    async def hold_for_payout(
        self,
        kind: PayoutKind,
        mint_url: str,
        hold_msat: int,
        idempotency_key: str | None,
        asked_sat: int | None,
        destination: str | None,
    ) -> PayoutRow:
        return await self._write(
            lambda c: payouts_sql.hold_for_payout(
                c, kind, mint_url, hold_msat, idempotency_key, asked_sat, destination
            )
        )

    async def settle_payout(self, payout_id: int, error: tuple[str, str] | None) -> PayoutRow:
        return await self._write(lambda c: payouts_sql.settle_payout(c, payout_id, error))

    async def payout_by_key(self, key: str) -> PayoutRow | None:
        return await self._one(lambda c: payouts_sql.payout_by_key(c, key))

    async def recent_payouts(self, limit: int) -> list[PayoutRow]:
        return await self._one(lambda c: payouts_sql.recent_payouts(c, limit))

    async def open_payouts(self, created_before: int) -> list[PayoutRow]:
        return await self._one(lambda c: payouts_sql.open_payouts(c, created_before))

    async def take_lease(self, name: str, holder: str, ttl_s: int) -> bool:
        return await self._write(lambda c: payouts_sql.take_lease(c, name, holder, ttl_s))

    # -- settings and audit ----------------------------------------------------------------

    async def load_settings(self) -> StoredSettings:
        return await self._one(load_settings)

    async def save_settings(
        self,
        overrides: str | None,
        password_hash: str | None,
        origin: PasswordOrigin = "admin",
    ) -> None:
        await self._write(lambda c: save_settings(c, overrides, password_hash, origin))

    async def audit_snapshot(self) -> LedgerSnapshot:
        return await self._read(audit_snapshot)


@contextlib.contextmanager
def _reachable(url: str) -> Iterator[None]:
    """A lost connection to the database, as the wallet's error: the request that met it
    is answered 503 and nothing was charged (its transaction did not commit, or its
    reservation is settled with the rest once the process serves again)."""
    try:
        yield
    except _CONNECTION_LOST as exc:
        raise StoreUnavailable(
            f"the database {redacted(url)} cannot be reached: {exc or type(exc).__name__}"
        ) from None
