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
import time
from dataclasses import dataclass

from mints.client import MintClient
from mints.errors import MintError
from wallet.custody import Custody
from wallet.custody.issue import OPEN_INVOICE_STATES
from wallet.errors import (
    InvalidAmount,
    InvoiceNotFound,
    InvoiceSecretInvalid,
)
from wallet.keys import KEYS_REISSUE_WINDOW_S, key_hash, new_admin_key, new_api_key
from wallet.records import InvoiceRecord, NewInvoiceRow

__all__ = [
    "MAX_INVOICE_SAT",
    "InvoiceRecord",
    "IssuedKeys",
    "LightningIn",
    "NewInvoice",
]

log = logging.getLogger(__name__)

INVOICE_ID_PREFIX = "inv_"
INVOICE_SECRET_PREFIX = "invsec_"
MAX_INVOICE_SAT = 21_000_000 * 100_000_000  # keeps every msat sum inside SQLite's int64
EXPIRY_GRACE_S = 120  # an invoice is given up this long after the mint's expiry
UNDATED_POLL_S = 24 * 3600  # how long an invoice without expiry is watched
_OPEN_STATES = OPEN_INVOICE_STATES


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
        self.store = custody.store
        self._locks: dict[str, asyncio.Lock] = {}

    # -- asking for an invoice ---------------------------------------------------------

    async def create(self, amount_sat: int, account_id: int | None, mint_url: str) -> NewInvoice:
        """A mint quote for ``amount_sat``; paid, it credits ``account_id`` or a new account."""
        amount = _check_amount(amount_sat)
        if account_id is not None:
            await self.store.account(account_id)
        client = self.custody.client_for(mint_url)
        quote = await client.mint_quote(amount)
        invoice_id = INVOICE_ID_PREFIX + secrets.token_hex(16)
        secret = INVOICE_SECRET_PREFIX + secrets.token_hex(32)
        await self.store.insert_invoice(
            NewInvoiceRow(
                invoice_id,
                key_hash(secret),
                client.url,
                quote.quote,
                quote.request,
                amount,
                account_id,
                quote.expiry,
            )
        )
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
        record = await self.store.invoice(invoice_id)
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
        ids = await self.store.open_invoice_ids()
        for invoice_id in ids:
            try:
                await self.refresh(invoice_id)
            except MintError as exc:
                log.info("invoice %s not checked now: %s", invoice_id, exc.message)
        return len(ids)

    async def _check_quote(self, record: InvoiceRecord) -> None:
        client = self.custody.client_for(record.mint_url)
        quote_id = await self.store.invoice_quote_id(record.id)
        quote = await client.get_mint_quote(quote_id)
        if quote.state == "PAID":
            await self._mint(record, client, quote_id)
        elif quote.state == "ISSUED":
            # only the node knows the quote id, so nobody else should have minted it
            log.error("invoice %s: the mint issued the quote without the node", record.id)
            await self.store.set_invoice_state(record.id, "failed", _OPEN_STATES)
        elif record.state == "unpaid" and time.time() > _deadline(record):
            await self.store.set_invoice_state(record.id, "expired", ("unpaid",))

    # -- minting: the custody operation ------------------------------------------------

    async def _mint(self, record: InvoiceRecord, client: MintClient, quote_id: str) -> None:
        await self.custody.issue(
            record.id, client.url, quote_id, record.amount_sat, record.account_id
        )

    async def _resolve(self, invoice_id: str) -> None:
        """Settle the invoice's pending mint operation from what the mint says."""
        op_id = await self.store.invoice_operation_id(invoice_id)
        if op_id is None:
            return
        try:
            await self.custody.resolve(op_id)
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
        expected = await self.store.invoice_secret_hash(invoice_id)
        if expected is None:
            raise InvoiceNotFound(f"no invoice {invoice_id}")
        if not hmac.compare_digest(expected, key_hash(secret)):
            raise InvoiceSecretInvalid("the invoice secret is not valid")
        api_key, admin_key = new_api_key(), new_admin_key()
        account = await self.store.deliver_invoice_keys(
            invoice_id,
            key_hash(api_key),
            key_hash(admin_key),
            int(time.time()) - KEYS_REISSUE_WINDOW_S,
        )
        if account is None:
            return None
        return IssuedKeys(account.id, api_key, admin_key, account.balance_msat, account.mint_url)


def _deadline(record: InvoiceRecord) -> int:
    """When an unpaid invoice is given up: the mint's expiry (or a day) plus a grace."""
    expires = (
        record.expires_at if record.expires_at is not None else record.created_at + UNDATED_POLL_S
    )
    return expires + EXPIRY_GRACE_S
