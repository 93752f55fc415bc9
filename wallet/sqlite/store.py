"""The wallet's store on one SQLite file: the embedded default, one node process.

Every method is one transaction on :class:`wallet.sqlite.database.Database` (one writer
with group commit, one reader), made of the SQL functions of this package.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

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
from wallet.seed import load_or_create_seed
from wallet.selection import Coin
from wallet.sqlite import audit as audit_sql
from wallet.sqlite import books as books_sql
from wallet.sqlite import completions as txn
from wallet.sqlite import custody as sql
from wallet.sqlite import invoices as invoices_sql
from wallet.sqlite import ledger as ledger_sql
from wallet.sqlite import node_settings
from wallet.sqlite import outgoing as outgoing_sql
from wallet.sqlite import payouts as payouts_sql
from wallet.sqlite.database import Database

DB_FILE = "wallet.sqlite3"


class SqliteStore:
    """:class:`wallet.store.WalletStore` on ``data_dir/wallet.sqlite3`` and the seed file."""

    shared = False

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.db = Database(data_dir / DB_FILE)

    async def open(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()

    async def seed(self) -> bytes:
        return load_or_create_seed(self.data_dir)

    async def nostr_key(self, candidate: bytes) -> bytes:
        return candidate  # one process: its data_dir keeps the key

    async def claim_counters(self, keyset_id: str, count: int) -> tuple[int, int | None]:
        # one process: counters derived ahead and never written down are derived again
        # after a restart, which is safe (they were never sent)
        return await self.db.read(lambda c: sql.next_counter(c, keyset_id)), None

    # -- accounts ----------------------------------------------------------------------

    async def account(self, account_id: int) -> AccountRow:
        return await self.db.read(lambda c: ledger_sql.get_account(c, account_id))

    async def account_by_key_hash(self, digest: str) -> AccountRow | None:
        return await self.db.read(lambda c: ledger_sql.find_account(c, "key_hash", digest))

    async def account_by_admin_key_hash(self, digest: str) -> AccountRow | None:
        return await self.db.read(lambda c: ledger_sql.find_account(c, "admin_key_hash", digest))

    async def open_account_by_key_hash(self, digest: str) -> AccountRow | None:
        row = await self.db.read(
            lambda c: (
                ledger_sql.find_account(c, "key_hash", digest)
                or ledger_sql.find_account(c, "admin_key_hash", digest)
            )
        )
        if row is not None:
            await self.db.write(lambda c: ledger_sql.mark_keys_used(c, row.id))
        return row

    async def account_of_token(
        self, token_id: str, signatures: frozenset[tuple[str, str]]
    ) -> AccountRow | None:
        return await self.db.read(lambda c: ledger_sql.account_of_token(c, token_id, signatures))

    async def account_with_unused_keys(
        self, account_id: int, key_hash: str, admin_key_hash: str
    ) -> AccountRow | None:
        return await self.db.read(
            lambda c: ledger_sql.account_with_unused_keys(c, account_id, key_hash, admin_key_hash)
        )

    async def account_made_by_token(self, token_id: str) -> int | None:
        return await self.db.read(lambda c: sql.account_made_by_token(c, token_id))

    async def token_account_and_redeeming(
        self, token_id: str, signatures: frozenset[tuple[str, str]]
    ) -> tuple[AccountRow | None, bool]:
        return await self.db.read(
            lambda c: (
                ledger_sql.account_of_token(c, token_id, signatures),
                sql.token_being_redeemed(c, token_id),
            )
        )

    async def rotate_api_key(self, account_id: int, digest: str) -> None:
        def rotate(c: sqlite3.Connection) -> None:
            if not ledger_sql.set_key_hash(c, account_id, digest):
                raise AccountNotFound(f"no account {account_id}")
            # moves no money, but is the account's latest event (keys are never handed
            # out again for an account that had one, see reissue_keys_if_untouched)
            ledger_sql.journal(c, "rotate", account_id=account_id)

        await self.db.write(rotate)

    # -- reservations and earnings -------------------------------------------------------

    async def reserve(self, account_id: int, amount_msat: int, purpose: str) -> int:
        return await self.db.write(
            lambda c: ledger_sql.reserve(c, account_id, amount_msat, purpose)
        )

    async def reserve_if_untouched(
        self, account_id: int, amount_msat: int, purpose: str
    ) -> int | None:
        return await self.db.write(
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
        return await self.db.write(
            lambda c: ledger_sql.settle(
                c, reservation_id, charge_msat, destination=destination, tag=tag
            )
        )

    async def reservation(self, reservation_id: int) -> Settlement:
        return await self.db.read(lambda c: ledger_sql.reservation_state(c, reservation_id))

    async def settle_open_reservations(self) -> int:
        def settle_all(c: sqlite3.Connection) -> int:
            found = ledger_sql.open_request_reservations(c)
            for reservation_id, delivered_msat in found:
                ledger_sql.settle(c, reservation_id, delivered_msat)
            return len(found)

        return await self.db.write(settle_all)

    async def record_delivered(
        self, reservation_id: int, delivered_msat: int, tag: RequestTag | None = None
    ) -> None:
        await self.db.write(
            lambda c: ledger_sql.record_delivered(c, reservation_id, delivered_msat, tag)
        )

    async def charged_requests_after(
        self, after_reservation_id: int, settled_since: int, limit: int
    ) -> list[ChargedRequest]:
        return await self.db.read(
            lambda c: ledger_sql.charged_requests_after(
                c, after_reservation_id, settled_since, limit
            )
        )

    async def last_reservation_id(self) -> int:
        return await self.db.read(ledger_sql.last_reservation_id)

    async def earnings_msat(self) -> int:
        return await self.db.read(ledger_sql.earnings_msat)

    async def book_remainder_to_earnings(self, account_id: int, kind: str) -> int:
        def book(c: sqlite3.Connection) -> int:
            remainder = ledger_sql.get_account(c, account_id).balance_msat % 1000
            ledger_sql.debit_to_earnings(c, account_id, remainder, kind=kind)
            return remainder

        return await self.db.write(book)

    # -- custody -------------------------------------------------------------------------

    async def coins_and_balance(
        self, mint_url: str, account_id: int, per_amount: int | None
    ) -> tuple[list[Coin], bool, int]:
        return await self.db.read(
            lambda c: (
                *sql.selectable_coins(c, mint_url, per_amount),
                ledger_sql.get_account(c, account_id).balance_msat,
            )
        )

    async def operations_in_flight(self, mint_url: str) -> bool:
        return await self.db.read(lambda c: sql.has_operations_in_flight(c, mint_url))

    async def held_mint_urls(self) -> list[str]:
        return await self.db.read(sql.held_mint_urls)

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
            return await self.db.write(
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
        return await self.db.write(
            lambda c: txn.write_receive(
                c, intent, mint_url, rows, token_id, foreign_inputs, on_written
            )
        )

    async def write_issue(
        self, intent: IssueIntent, mint_url: str, rows: Sequence[OutputRow], quote_id: str
    ) -> int | None:
        return await self.db.write(lambda c: txn.write_issue(c, intent, mint_url, rows, quote_id))

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
            return await self.db.write(
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
        return await self.db.write(
            lambda c: txn.complete_receive(c, op, proofs, credited_msat, reserve_msat)
        )

    async def received_credit(self, op_id: int) -> Credit:
        return await self.db.read(lambda c: txn.credited(c, op_id))

    async def complete_send(
        self,
        op: Operation,
        keep: Sequence[StoredProof],
        send: Sequence[StoredProof],
        token: str,
    ) -> str:
        return await self.db.write(lambda c: txn.complete_send(c, op, keep, send, token))

    async def complete_melt(self, op: Operation, change: Sequence[StoredProof]) -> int | None:
        return await self.db.write(lambda c: txn.complete_melt(c, op, change))

    async def complete_issue(
        self, op: Operation, proofs: Sequence[StoredProof], credited_msat: int
    ) -> None:
        await self.db.write(lambda c: txn.complete_issue(c, op, proofs, credited_msat))

    async def revert_spend(self, op_id: int, error: str) -> None:
        await self.db.write(lambda c: txn.revert_spend(c, op_id, error))

    async def fail_operation(self, op_id: int, error: str) -> None:
        await self.db.write(
            lambda c: sql.finish_operation(c, op_id, OperationState.FAILED, error=error[:500])
        )

    async def fail_issue(self, op_id: int, invoice_id: str, invoice_state: str, error: str) -> None:
        await self.db.write(lambda c: txn.fail_issue(c, op_id, invoice_id, invoice_state, error))

    async def mark_inputs_lost(self, op_id: int, error: str) -> None:
        await self.db.write(lambda c: txn.mark_inputs_lost(c, op_id, error))

    async def operation(self, op_id: int) -> Operation:
        return await self.db.read(lambda c: sql.operation(c, op_id))

    async def operation_outputs(self, op_id: int) -> list[OutputRow]:
        return await self.db.read(lambda c: sql.operation_outputs(c, op_id))

    async def operation_inputs(self, op_id: int) -> list[StoredProof]:
        return await self.db.read(lambda c: sql.operation_inputs(c, op_id))

    async def operation_result(self, op_id: int) -> OperationResult:
        return await self.db.read(lambda c: sql.operation_result(c, op_id))

    async def operation_token(self, op_id: int) -> str:
        return await self.db.read(lambda c: sql.operation_token(c, op_id))

    async def pending_operations(self) -> list[Operation]:
        return await self.db.read(sql.pending_operations)

    async def stale_operation_ids(self, written_by: int) -> list[int]:
        return await self.db.read(lambda c: sql.stale_operation_ids(c, written_by))

    async def pending_receive_of_token(self, token_id: str) -> int | None:
        return await self.db.read(lambda c: sql.pending_receive_of_token(c, token_id))

    # -- tokens out ----------------------------------------------------------------------

    async def withdrawals(self, account_id: int, limit: int) -> list[Withdrawal]:
        return await self.db.read(lambda c: outgoing_sql.withdrawals(c, account_id, limit))

    async def outgoing_tokens(self, account_id: int, purpose: str) -> list[tuple[str, int]]:
        return await self.db.read(lambda c: outgoing_sql.outgoing_tokens(c, account_id, purpose))

    async def last_refund_if_untouched(self, account_id: int) -> RefundRow | None:
        return await self.db.read(lambda c: outgoing_sql.last_refund_if_untouched(c, account_id))

    # -- invoices ------------------------------------------------------------------------

    async def insert_invoice(self, invoice: NewInvoiceRow) -> None:
        def insert(c: sqlite3.Connection) -> None:
            if invoice.account_id is not None:
                ledger_sql.get_account(c, invoice.account_id)
            invoices_sql.insert_invoice(
                c,
                invoice.id,
                secret_hash=invoice.secret_hash,
                mint_url=invoice.mint_url,
                quote_id=invoice.quote_id,
                bolt11=invoice.bolt11,
                amount_sat=invoice.amount_sat,
                account_id=invoice.account_id,
                expires_at=invoice.expires_at,
            )

        await self.db.write(insert)

    async def invoice(self, invoice_id: str) -> InvoiceRecord | None:
        return await self.db.read(lambda c: invoices_sql.invoice(c, invoice_id))

    async def open_invoice_ids(self) -> list[str]:
        return await self.db.read(invoices_sql.open_invoice_ids)

    async def invoice_quote_id(self, invoice_id: str) -> str:
        return await self.db.read(lambda c: invoices_sql.quote_id(c, invoice_id))

    async def invoice_operation_id(self, invoice_id: str) -> int | None:
        return await self.db.read(lambda c: invoices_sql.operation_id(c, invoice_id))

    async def invoice_secret_hash(self, invoice_id: str) -> str | None:
        return await self.db.read(lambda c: invoices_sql.secret_hash(c, invoice_id))

    async def set_invoice_state(self, invoice_id: str, state: str, when: tuple[str, ...]) -> bool:
        return await self.db.write(lambda c: invoices_sql.set_state(c, invoice_id, state, when))

    async def deliver_invoice_keys(
        self, invoice_id: str, key_hash: str, admin_key_hash: str, reissue_since: int
    ) -> AccountRow | None:
        return await self.db.write(
            lambda c: txn.deliver_invoice_keys(
                c, invoice_id, key_hash, admin_key_hash, reissue_since
            )
        )

    # -- payouts, books, leases ----------------------------------------------------------

    async def books(self, mint_urls: list[str]) -> Books:
        return await self.db.read(lambda c: books_sql.books(c, mint_urls))

    async def hold_for_payout(
        self,
        kind: PayoutKind,
        mint_url: str,
        hold_msat: int,
        idempotency_key: str | None,
        asked_sat: int | None,
        destination: str | None,
    ) -> PayoutRow:
        return await self.db.write(
            lambda c: payouts_sql.hold_for_payout(
                c,
                kind=kind,
                mint_url=mint_url,
                hold_msat=hold_msat,
                idempotency_key=idempotency_key,
                asked_sat=asked_sat,
                destination=destination,
            )
        )

    async def settle_payout(self, payout_id: int, error: tuple[str, str] | None) -> PayoutRow:
        return await self.db.write(lambda c: payouts_sql.settle_payout(c, payout_id, error))

    async def payout_by_key(self, key: str) -> PayoutRow | None:
        return await self.db.read(lambda c: payouts_sql.payout_by_key(c, key))

    async def recent_payouts(self, limit: int) -> list[PayoutRow]:
        return await self.db.read(lambda c: payouts_sql.recent_payouts(c, limit))

    async def open_payouts(self, created_before: int) -> list[PayoutRow]:
        return await self.db.read(lambda c: payouts_sql.open_payouts(c, created_before))

    async def take_lease(self, name: str, holder: str, ttl_s: int) -> bool:
        return await self.db.write(lambda c: payouts_sql.take_lease(c, name, holder, ttl_s))

    # -- settings and audit ----------------------------------------------------------------

    async def load_settings(self) -> StoredSettings:
        return await self.db.read(node_settings.load)

    async def save_settings(
        self,
        overrides: str | None,
        password_hash: str | None,
        origin: PasswordOrigin = "admin",
    ) -> None:
        def save(c: sqlite3.Connection) -> None:
            if overrides is not None:
                node_settings.upsert(c, overrides=overrides)
            if password_hash is not None:
                node_settings.upsert(
                    c, admin_password_hash=password_hash, admin_password_origin=origin
                )

        await self.db.write(save)

    async def audit_snapshot(self) -> LedgerSnapshot:
        return await self.db.read(audit_sql.snapshot)
