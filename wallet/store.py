"""The wallet's storage: one typed interface, one method per transaction the wallet needs.

Two implementations sit side by side: :class:`wallet.sqlite.store.SqliteStore` (one file
in data_dir, the embedded default) and :class:`wallet.postgres.store.PostgresStore` (for
several node processes on one ledger). Every method is one transaction: a movement of
money commits together with its journal entry, or not at all. The rest of ``wallet``
knows only this interface.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from mints.models import Proof
from wallet.operations import (
    IssueIntent,
    Operation,
    OperationResult,
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
from wallet.selection import Coin

# coins read per amount for a selection: enough for any token or invoice of ordinary size
# (a selection takes few of each amount), and bounded however much custody holds
COINS_PER_AMOUNT = 64


class WalletStore(Protocol):
    """Custody, ledger, invoices and the node's settings, in one database."""

    @property
    def shared(self) -> bool:
        """Whether other processes may use the same database (PostgreSQL)."""
        ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    # -- the seed and its NUT-13 counters --------------------------------------------------

    async def seed(self) -> bytes:
        """The wallet's 64-byte seed, made on first use."""
        ...

    async def nostr_key(self, candidate: bytes) -> bytes:
        """The node's generated Nostr key, the same in every process of a shared store:
        ``candidate`` stored if none is yet (atomically: the first wins). A store no other
        process uses returns ``candidate`` (the node keeps that key in its data_dir)."""
        ...

    async def claim_counters(self, keyset_id: str, count: int) -> tuple[int, int | None]:
        """Counters for this process to derive outputs from: ``(first, end)``; end None
        when no other process uses the database (then every counter from first on)."""
        ...

    # -- accounts ----------------------------------------------------------------------

    async def account(self, account_id: int) -> AccountRow: ...

    async def account_by_key_hash(self, digest: str) -> AccountRow | None: ...

    async def account_by_admin_key_hash(self, digest: str) -> AccountRow | None: ...

    async def open_account_by_key_hash(self, digest: str) -> AccountRow | None:
        """The account an API or admin key with this hash opens; marks its keys used."""
        ...

    async def account_of_token(
        self, token_id: str, signatures: frozenset[tuple[str, str]]
    ) -> AccountRow | None:
        """The account a token opened here, for the token itself (its proofs' signatures)."""
        ...

    async def account_with_unused_keys(
        self, account_id: int, key_hash: str, admin_key_hash: str
    ) -> AccountRow | None: ...

    async def account_made_by_token(self, token_id: str) -> int | None: ...

    async def token_account_and_redeeming(
        self, token_id: str, signatures: frozenset[tuple[str, str]]
    ) -> tuple[AccountRow | None, bool]:
        """In one snapshot: the token's account, and whether its redeem is pending."""
        ...

    async def rotate_api_key(self, account_id: int, digest: str) -> None: ...

    # -- reservations and earnings -------------------------------------------------------

    async def reserve(self, account_id: int, amount_msat: int, purpose: str) -> int: ...

    async def reserve_if_untouched(
        self, account_id: int, amount_msat: int, purpose: str
    ) -> int | None: ...

    async def settle(
        self,
        reservation_id: int,
        charge_msat: int,
        destination: str = "earnings",
        *,
        tag: RequestTag | None = None,
    ) -> Settlement:
        """Charge at most the reservation and release the rest, exactly once; ``tag``
        names the request in the same update."""
        ...

    async def reservation(self, reservation_id: int) -> Settlement: ...

    async def settle_open_reservations(self) -> int: ...

    async def record_delivered(
        self, reservation_id: int, delivered_msat: int, tag: RequestTag | None = None
    ) -> None: ...

    async def charged_requests_after(
        self, after_reservation_id: int, settled_since: int, limit: int
    ) -> list[ChargedRequest]:
        """Charged request reservations naming their request, by id (usage records lost
        in a crash are rebuilt from them)."""
        ...

    async def last_reservation_id(self) -> int: ...

    async def earnings_msat(self) -> int: ...

    async def book_remainder_to_earnings(self, account_id: int, kind: str) -> int: ...

    # -- custody: selecting, writing down, completing --------------------------------------

    async def coins_and_balance(
        self, mint_url: str, account_id: int, per_amount: int | None
    ) -> tuple[list[Coin], bool, int]: ...

    async def operations_in_flight(self, mint_url: str) -> bool: ...

    async def held_mint_urls(self) -> list[str]: ...

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
        """Hold the account's money, write the operation down, lock its inputs; None when
        another operation took one of the inputs first. ``on_written`` gets the new
        operation's id inside the transaction, before any other reader can see it (the
        caller marks it as its own: no recovery round reaches for it meanwhile)."""
        ...

    async def write_receive(
        self,
        intent: ReceiveIntent,
        mint_url: str,
        rows: Sequence[OutputRow],
        token_id: str,
        foreign_inputs: Sequence[Proof],
        on_written: Callable[[int], None],
    ) -> int:
        """Write a token's swap down; raises TokenBeingRedeemed or TokenAlreadyRedeemed.
        ``on_written`` as for :meth:`write_spend`."""
        ...

    async def write_issue(
        self, intent: IssueIntent, mint_url: str, rows: Sequence[OutputRow], quote_id: str
    ) -> int | None:
        """Move the invoice to minting and write its mint down; None if it is not open."""
        ...

    async def send_exact(
        self,
        account_id: int,
        mint_url: str,
        amount_sat: int,
        proof_ids: Sequence[int],
        purpose: str,
        make_token: Callable[[list[Proof]], str],
    ) -> str | None:
        """Charge the account and hand these proofs over as a token; None when taken."""
        ...

    async def complete_receive(
        self,
        op: Operation,
        proofs: Sequence[StoredProof],
        credited_msat: int,
        reserve_msat: int | None,
    ) -> Credit: ...

    async def received_credit(self, op_id: int) -> Credit:
        """What a finished receive credited; OperationInFlight when it credited nothing."""
        ...

    async def complete_send(
        self,
        op: Operation,
        keep: Sequence[StoredProof],
        send: Sequence[StoredProof],
        token: str,
    ) -> str:
        """Store a swap's result; returns the token (the stored one if done before)."""
        ...

    async def complete_melt(self, op: Operation, change: Sequence[StoredProof]) -> int | None:
        """Store a paid melt; its cost in sat, or None when it was finished before."""
        ...

    async def complete_issue(
        self, op: Operation, proofs: Sequence[StoredProof], credited_msat: int
    ) -> None: ...

    async def revert_spend(self, op_id: int, error: str) -> None:
        """The swap or melt never happened: inputs back, reservation released."""
        ...

    async def fail_operation(self, op_id: int, error: str) -> None: ...

    async def fail_issue(
        self, op_id: int, invoice_id: str, invoice_state: str, error: str
    ) -> None: ...

    async def mark_inputs_lost(self, op_id: int, error: str) -> None: ...

    async def operation(self, op_id: int) -> Operation: ...

    async def operation_outputs(self, op_id: int) -> list[OutputRow]: ...

    async def operation_inputs(self, op_id: int) -> list[StoredProof]: ...

    async def operation_result(self, op_id: int) -> OperationResult: ...

    async def operation_token(self, op_id: int) -> str: ...

    async def pending_operations(self) -> list[Operation]: ...

    async def stale_operation_ids(self, written_by: int) -> list[int]: ...

    async def pending_receive_of_token(self, token_id: str) -> int | None: ...

    # -- tokens out ----------------------------------------------------------------------

    async def withdrawals(self, account_id: int, limit: int) -> list[Withdrawal]: ...

    async def outgoing_tokens(self, account_id: int, purpose: str) -> list[tuple[str, int]]: ...

    async def last_refund_if_untouched(self, account_id: int) -> RefundRow | None: ...

    # -- invoices (Lightning in) ---------------------------------------------------------

    async def insert_invoice(self, invoice: NewInvoiceRow) -> None:
        """Store an invoice; AccountNotFound when its account is gone."""
        ...

    async def invoice(self, invoice_id: str) -> InvoiceRecord | None: ...

    async def open_invoice_ids(self) -> list[str]: ...

    async def invoice_quote_id(self, invoice_id: str) -> str: ...

    async def invoice_operation_id(self, invoice_id: str) -> int | None: ...

    async def invoice_secret_hash(self, invoice_id: str) -> str | None: ...

    async def set_invoice_state(
        self, invoice_id: str, state: str, when: tuple[str, ...]
    ) -> bool: ...

    async def deliver_invoice_keys(
        self, invoice_id: str, key_hash: str, admin_key_hash: str, reissue_since: int
    ) -> AccountRow | None:
        """Give a paid invoice's new account these keys: None while it is not paid;
        KeysAlreadyDelivered once they were handed over and something happened since."""
        ...

    # -- the node's settings ---------------------------------------------------------------

    async def load_settings(self) -> StoredSettings: ...

    async def save_settings(
        self,
        overrides: str | None,
        password_hash: str | None,
        origin: PasswordOrigin = "admin",
    ) -> None: ...

    # -- earnings paid out, the books, node-wide leases ------------------------------------

    async def books(self, mint_urls: list[str]) -> Books:
        """The books per mint, in one snapshot."""
        ...

    async def hold_for_payout(
        self,
        kind: PayoutKind,
        mint_url: str,
        hold_msat: int,
        idempotency_key: str | None,
        asked_sat: int | None,
        destination: str | None,
    ) -> PayoutRow:
        """Move ``hold_msat`` from earnings to a new payout's own account and write the
        payout down; InsufficientEarnings, or PayoutKeyTaken for a key used before."""
        ...

    async def settle_payout(self, payout_id: int, error: tuple[str, str] | None) -> PayoutRow:
        """Close a pending payout from what custody did with its account, giving back what
        it did not spend; unchanged while custody is busy with it."""
        ...

    async def payout_by_key(self, key: str) -> PayoutRow | None: ...

    async def recent_payouts(self, limit: int) -> list[PayoutRow]: ...

    async def open_payouts(self, created_before: int) -> list[PayoutRow]: ...

    async def take_lease(self, name: str, holder: str, ttl_s: int) -> bool:
        """Whether ``holder`` holds the node-wide lease ``name`` now (taken, renewed, or
        taken over from a holder whose lease ran out)."""
        ...

    # -- the audit -------------------------------------------------------------------------

    async def audit_snapshot(self) -> LedgerSnapshot: ...
