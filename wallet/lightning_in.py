"""Lightning in: a paid NUT-04 mint quote becomes the node's proofs and an account's balance.

Minting follows the rule every swap follows: the ``mint`` operation and its outputs
(secrets derived from the seed) are written down before ``POST /v1/mint/bolt11`` is
sent, and the new proofs, the credit and the invoice's new state are stored in one
transaction. An answer lost on the way is recovered from the mint: NUT-09 restore once
the quote is ISSUED, the very same outputs sent again while it is still PAID.

An invoice either tops up the account that asked for it or creates a new one. A new
account is created without keys; its keys are made and handed over once, to whoever
presents the invoice's secret (the node keeps only the secret's hash), so knowing an
invoice's id is never enough to take the money.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import sqlite3
from dataclasses import dataclass
from typing import Any

from mints.client import MintClient
from mints.errors import KeysetInactive, MintError, MintRefused
from mints.keysets import amount_split
from mints.models import BlindSignature
from wallet import blinding
from wallet.custody import Custody
from wallet.errors import (
    InvalidAmount,
    InvoiceNotFound,
    InvoiceSecretInvalid,
    KeysAlreadyDelivered,
)
from wallet.faults import fault_point
from wallet.keys import KEYS_REISSUE_WINDOW_S, key_hash, new_admin_key, new_api_key
from wallet.sqlite import custody as sql
from wallet.sqlite import invoices as invoices_sql
from wallet.sqlite import ledger as ledger_sql
from wallet.sqlite.invoices import InvoiceRecord
from wallet.sqlite.ledger import now

__all__ = [
    "MAX_INVOICE_SAT",
    "InvoiceRecord",
    "IssuedKeys",
    "LightningIn",
    "NewInvoice",
    "recover_mint",
]

log = logging.getLogger(__name__)

INVOICE_ID_PREFIX = "inv_"
INVOICE_SECRET_PREFIX = "invsec_"
MAX_INVOICE_SAT = 21_000_000 * 100_000_000  # keeps every msat sum inside SQLite's int64
EXPIRY_GRACE_S = 120  # an invoice is given up this long after the mint's expiry
UNDATED_POLL_S = 24 * 3600  # how long an invoice without expiry is watched
_OPEN_STATES = ("unpaid", "expired")  # states a paid quote may still be minted from


@dataclass(frozen=True, slots=True)
class NewInvoice:
    invoice_id: str
    secret: str  # shown once; the node keeps only its hash
    bolt11: str
    amount_sat: int
    mint_url: str
    expires_at: int | None
    mode: str  # "create" | "topup"


@dataclass(frozen=True, slots=True)
class IssuedKeys:
    account_id: int
    api_key: str
    admin_key: str
    balance_msat: int
    mint_url: str | None


def _check_amount(amount_sat: object) -> int:
    if type(amount_sat) is not int or amount_sat <= 0:
        raise InvalidAmount("amount must be a positive integer of sat")
    if amount_sat > MAX_INVOICE_SAT:
        raise InvalidAmount(f"amount must be at most {MAX_INVOICE_SAT} sat")
    return amount_sat


class LightningIn:
    """Invoices from the mint, and the proofs they turn into once paid."""

    def __init__(self, custody: Custody) -> None:
        self.custody = custody
        self.db = custody.db
        self._locks: dict[str, asyncio.Lock] = {}

    # -- asking for an invoice ---------------------------------------------------------

    async def create(self, amount_sat: int, account_id: int | None, mint_url: str) -> NewInvoice:
        """A mint quote for ``amount_sat``; paid, it credits ``account_id`` or a new account."""
        amount = _check_amount(amount_sat)
        if account_id is not None:
            await self.db.read(lambda c: ledger_sql.get_account(c, account_id))
        client = self.custody.client_for(mint_url)
        quote = await client.mint_quote(amount)
        invoice_id = INVOICE_ID_PREFIX + secrets.token_hex(16)
        secret = INVOICE_SECRET_PREFIX + secrets.token_hex(32)

        def txn(c: sqlite3.Connection) -> None:
            if account_id is not None:
                ledger_sql.get_account(c, account_id)
            invoices_sql.insert_invoice(
                c,
                invoice_id,
                secret_hash=key_hash(secret),
                mint_url=client.url,
                quote_id=quote.quote,
                bolt11=quote.request,
                amount_sat=amount,
                account_id=account_id,
                expires_at=quote.expiry,
            )

        await self.db.write(txn)
        return NewInvoice(
            invoice_id,
            secret,
            quote.request,
            amount,
            client.url,
            quote.expiry,
            "create" if account_id is None else "topup",
        )

    async def get(self, invoice_id: str) -> InvoiceRecord:
        record = await self.db.read(lambda c: invoices_sql.invoice(c, invoice_id))
        if record is None:
            raise InvoiceNotFound(f"no invoice {invoice_id}")
        return record

    # -- watching the mint --------------------------------------------------------------

    async def refresh(self, invoice_id: str) -> InvoiceRecord:
        """Ask the mint about the invoice and mint its proofs once it is paid."""
        lock = self._locks.setdefault(invoice_id, asyncio.Lock())
        async with lock:
            record = await self.get(invoice_id)
            if record.state == "minting":
                await self._resolve(invoice_id)
            elif record.state in _OPEN_STATES:
                await self._check_quote(record)
            record = await self.get(invoice_id)
        if record.state != "minting" and not lock.locked():
            self._locks.pop(invoice_id, None)
        return record

    async def poll(self) -> int:
        """Refresh every invoice that may still be paid (an unpaid one past its expiry is
        marked expired on the way); returns how many were looked at."""
        ids = await self.db.read(invoices_sql.open_invoice_ids)
        for invoice_id in ids:
            try:
                await self.refresh(invoice_id)
            except MintError as exc:
                log.info("invoice %s not checked now: %s", invoice_id, exc.message)
        return len(ids)

    async def _check_quote(self, record: InvoiceRecord) -> None:
        client = self.custody.client_for(record.mint_url)
        quote_id = await self.db.read(lambda c: invoices_sql.quote_id(c, record.id))
        quote = await client.get_mint_quote(quote_id)
        if quote.state == "PAID":
            await self._mint(record, client, quote_id)
        elif quote.state == "ISSUED":
            # only the node knows the quote id, so nobody else should have minted it
            log.error("invoice %s: the mint issued the quote without the node", record.id)
            await self.db.write(
                lambda c: invoices_sql.set_state(c, record.id, "failed", _OPEN_STATES)
            )
        elif record.state == "unpaid" and now() > _deadline(record):
            await self.db.write(
                lambda c: invoices_sql.set_state(c, record.id, "expired", ("unpaid",))
            )

    # -- minting: write down, send, store ------------------------------------------------

    async def _mint(self, record: InvoiceRecord, client: MintClient, quote_id: str) -> None:
        keyset = await client.active_keyset()
        outputs = await self.custody.prepare(keyset, amount_split(record.amount_sat))
        rows = [sql.OutputRow("keep", o) for o in outputs]
        intent: dict[str, Any] = {"invoice_id": record.id, "amount_sat": record.amount_sat}
        if record.account_id is not None:
            intent["account_id"] = record.account_id
        else:
            intent["create"] = {"kind": "key"}

        def txn(c: sqlite3.Connection) -> int | None:
            if not invoices_sql.set_state(c, record.id, "minting", _OPEN_STATES):
                return None
            op_id = sql.insert_operation(c, "mint", client.url, intent, rows, quote_id=quote_id)
            invoices_sql.set_operation(c, record.id, op_id)
            return op_id

        op_id = await self.db.write(txn)
        if op_id is None:
            return
        fault_point("mint:written")
        try:
            signatures = await client.mint(quote_id, [o.message() for o in outputs])
        except MintError as exc:
            log.info("invoice %s: mint answered %s; resolving", record.id, type(exc).__name__)
            await self._resolve(record.id)
            return
        fault_point("mint:minted")
        if len(signatures) != len(rows):
            await self._resolve(record.id)
            return
        await complete_mint(self.custody, op_id, rows, signatures)

    async def _resolve(self, invoice_id: str) -> None:
        """Settle the invoice's pending mint operation from what the mint says."""
        from wallet.recovery import recover_operation

        op_id = await self.db.read(lambda c: invoices_sql.operation_id(c, invoice_id))
        if op_id is None:
            return
        try:
            await recover_operation(self.custody, op_id)
        except MintError as exc:  # the poller or the next start tries again
            log.info("invoice %s stays in progress: %s", invoice_id, exc.message)

    # -- the new account's keys, once --------------------------------------------------

    async def deliver_keys(self, invoice_id: str, secret: str) -> IssuedKeys | None:
        """The new account's keys for the secret's holder, made now.

        None while the invoice is not paid yet. Raises :class:`InvoiceSecretInvalid` for a
        wrong secret. Asked again, new keys replace the first ones while nothing has
        happened on the account (the answer with them may have been lost); else
        :class:`KeysAlreadyDelivered`.
        """
        expected = await self.db.read(lambda c: invoices_sql.secret_hash(c, invoice_id))
        if expected is None:
            raise InvoiceNotFound(f"no invoice {invoice_id}")
        if not hmac.compare_digest(expected, key_hash(secret)):
            raise InvoiceSecretInvalid("the invoice secret is not valid")
        api_key, admin_key = new_api_key(), new_admin_key()

        def txn(c: sqlite3.Connection) -> IssuedKeys | None:
            record = invoices_sql.invoice(c, invoice_id)
            assert record is not None
            if record.account_id is not None or record.state != "paid":
                return None
            if record.keys_delivered:  # asked again: the answer with them may have been lost
                return _reissued(c, record, invoice_id, api_key, admin_key)
            if record.credited_account_id is None:
                raise KeysAlreadyDelivered("the keys of this invoice were handed over before")
            invoices_sql.mark_keys_delivered(c, invoice_id)
            account_id = record.credited_account_id
            if not ledger_sql.give_keys(c, account_id, key_hash(api_key), key_hash(admin_key)):
                raise KeysAlreadyDelivered("the account already has keys")
            account = ledger_sql.get_account(c, account_id)
            return IssuedKeys(
                account.id, api_key, admin_key, account.balance_msat, account.mint_url
            )

        return await self.db.write(txn)


def _reissued(
    c: sqlite3.Connection, record: InvoiceRecord, invoice_id: str, api_key: str, admin_key: str
) -> IssuedKeys:
    """The account's keys again (new ones) while nothing has happened on it."""
    op_id = invoices_sql.operation_id(c, invoice_id)
    account = None
    if record.credited_account_id is not None and op_id is not None:
        account = ledger_sql.reissue_keys_if_untouched(
            c,
            record.credited_account_id,
            op_id,
            key_hash(api_key),
            key_hash(admin_key),
            ledger_sql.now() - KEYS_REISSUE_WINDOW_S,
        )
    if account is None:
        raise KeysAlreadyDelivered("the keys of this invoice were handed over before")
    return IssuedKeys(account.id, api_key, admin_key, account.balance_msat, account.mint_url)


def _deadline(record: InvoiceRecord) -> int:
    """When an unpaid invoice is given up: the mint's expiry (or a day) plus a grace."""
    expires = (
        record.expires_at if record.expires_at is not None else record.created_at + UNDATED_POLL_S
    )
    return expires + EXPIRY_GRACE_S


async def complete_mint(
    custody: Custody, op_id: int, rows: list[sql.OutputRow], signatures: list[BlindSignature]
) -> None:
    """Store the minted proofs, credit the account (a new one if asked) and close the invoice.

    One transaction; a second call for the same operation changes nothing.
    """
    op = await custody.db.read(lambda c: sql.operation(c, op_id))
    client = custody.client_for(op.mint_url)
    stored = await blinding.unblind_rows(client, rows, signatures)
    credited_msat = sum(s.proof.amount for s in stored) * 1000
    intent = op.intent

    def txn(c: sqlite3.Connection) -> None:
        if sql.operation_state(c, op_id) != "pending":
            return
        sql.insert_proofs(c, op.mint_url, stored, state="unspent", operation_id=op_id)
        if "account_id" in intent:
            account_id = int(intent["account_id"])
        else:
            account_id = ledger_sql.create_account(c, "key", mint_url=op.mint_url)
        if credited_msat:
            ledger_sql.credit_from_custody(
                c, account_id, credited_msat, operation_id=op_id, kind="lightning_in"
            )
        sql.finish_operation(
            c, op_id, "done", result={"account_id": account_id, "credited_msat": credited_msat}
        )
        invoices_sql.mark_paid(c, str(intent["invoice_id"]), account_id, credited_msat)

    await custody.db.write(txn)


async def recover_mint(custody: Custody, op: sql.Operation) -> str:
    """Finish a mint operation from the quote's state; 'done', 'failed' or 'pending'."""
    assert op.quote_id is not None
    rows = await custody.db.read(lambda c: sql.operation_outputs(c, op.id))
    client = custody.client_for(op.mint_url)
    quote = await client.get_mint_quote(op.quote_id)
    messages = [r.output.message() for r in rows]
    if quote.state == "PAID":
        try:
            signatures = await client.mint(op.quote_id, messages)
        except KeysetInactive:
            # nothing was signed; when the mint now names another keyset active (it rotated
            # its keys), these outputs are never signed: the invoice goes back to be minted
            # afresh on the new keyset. Else the mint contradicts itself: ask again later.
            active = await client.active_keyset()
            if not rows or active.id == rows[0].output.keyset_id:
                return "pending"
            await custody.db.write(lambda c: _fail_mint(c, op, "unpaid", "the keyset rotated"))
            return "failed"
        except MintRefused:
            # signed meanwhile (a lost answer racing this one): the restore below finds it
            quote = await client.get_mint_quote(op.quote_id)
        else:
            if len(signatures) == len(rows):
                await complete_mint(custody, op.id, rows, signatures)
                return "done"
            quote = await client.get_mint_quote(op.quote_id)
    if quote.state == "ISSUED":
        signed = await client.restore(messages) if messages else {}
        found = [(r, signed[r.output.B_]) for r in rows if r.output.B_ in signed]
        if found:
            await complete_mint(custody, op.id, [r for r, _ in found], [s for _, s in found])
            return "done"
        log.error("mint operation %s: the quote was issued to other outputs", op.id)
        await custody.db.write(lambda c: _fail_mint(c, op, "failed", "issued elsewhere"))
        return "failed"
    if quote.state in ("PAID", "PENDING"):
        return "pending"
    # UNPAID: nothing was minted; the invoice may still be paid and minted afresh
    await custody.db.write(lambda c: _fail_mint(c, op, "unpaid", "the quote is not paid"))
    return "failed"


def _fail_mint(c: sqlite3.Connection, op: sql.Operation, invoice_state: str, error: str) -> None:
    if sql.finish_operation(c, op.id, "failed", error=error):
        invoices_sql.release_minting(c, str(op.intent["invoice_id"]), invoice_state)
