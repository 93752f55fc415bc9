"""The operator's earnings out: the books, and payouts as a token or to an invoice.

A payout is paid by custody exactly as an account's withdrawal is (written ahead,
recovered by the one rule of :mod:`wallet.custody.resolve`): what it may spend is first
moved from earnings to an account of the payout's own, in the transaction that writes
the payout down and checks the earnings, so liabilities can never be paid out and two
payouts never hold the same earnings. Closing a payout gives back to earnings what its
account did not spend, once custody is done with it (at once, or after recovery).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from mints.errors import MintError, MintRefused, MintUntrusted
from mints.models import MeltQuote
from mints.token import normalize_mint_url
from wallet.errors import (
    InsufficientBalance,
    InsufficientCustody,
    InsufficientEarnings,
    InvalidAmount,
    InvoiceAmountMismatch,
    InvoiceRejected,
    OperationInFlight,
    PaymentFailed,
    PayoutKeyReused,
    PayoutKeyTaken,
    PayoutPending,
    WalletError,
)
from wallet.payout_records import PAYOUT_PURPOSE, Books, PayoutKind, PayoutRow, PayoutState

if TYPE_CHECKING:
    from wallet.service import WalletService

log = logging.getLogger(__name__)

__all__ = ["Books", "PayoutKind", "PayoutRow", "PayoutState", "Payouts"]

# the inputs a payout's swap or melt may take, for the fee it may cost at a mint that
# charges input fees (NUT-02); held with the payout, and what is not spent comes back
_FEE_INPUTS = 64
_STALE_AFTER_S = 60  # a pending payout no task of this process is on, older than this


class Payouts:
    """Earnings out of the node, for its operator."""

    def __init__(self, wallet: WalletService) -> None:
        self.wallet = wallet
        self._live: set[int] = set()
        self._key_locks: dict[str, asyncio.Lock] = {}
        self._holding = asyncio.Lock()
        self._started_at = int(time.time()) - 1  # what a run before this one left

    # -- reading ------------------------------------------------------------------------

    async def books(self) -> Books:
        return (await self._books_with_urls())[1]

    async def recent(self, limit: int = 50) -> list[PayoutRow]:
        return await self.wallet.store.recent_payouts(limit)

    # -- paying out ---------------------------------------------------------------------

    async def withdraw_token(
        self, amount_sat: int | None, mint_url: str | None = None, key: str | None = None
    ) -> PayoutRow:
        """Earnings as a token from ``mint_url`` (else the mint where most can be paid);
        ``amount_sat`` None: all that can be paid out there, the swap's fee taken out."""
        if amount_sat is not None and (type(amount_sat) is not int or amount_sat <= 0):
            raise InvalidAmount("amount must be a positive integer of sat")
        async with self._key_lock(key):
            replay = await self._replay(key)
            if replay is not None:
                _same_ask(
                    replay,
                    replay.kind is PayoutKind.TOKEN
                    and replay.asked_sat == amount_sat
                    and mint_url in (None, replay.mint_url),
                )
                return replay
            urls, now = await self._books_with_urls()
            mint = self._choose(now, urls, mint_url)
            if amount_sat is None:
                at_least, hold = 1000, _withdrawable_at(now, mint)
            else:
                at_least = amount_sat * 1000
                hold = at_least + await self._fee_allowance_sat(mint) * 1000
            row = await self._hold(PayoutKind.TOKEN, mint, hold, at_least, key, amount_sat)
            with self._working_on(row.id):
                error: tuple[str, str] | None = None
                try:
                    await self.wallet.custody.send(
                        row.account_id, mint, amount_sat, purpose=PAYOUT_PURPOSE
                    )
                except OperationInFlight:
                    pass  # stays pending: recovery finishes it, and the payout after it
                except Exception as exc:
                    error = _error_code(exc)
                    if error is None:
                        raise
                row = await self._settle(row, error)
            return _answer(row)

    async def pay_invoice(
        self,
        invoice: str,
        mint_url: str | None = None,
        key: str | None = None,
        *,
        expect_sat: int | None = None,
        kind: PayoutKind = PayoutKind.INVOICE,
        destination: str | None = None,
    ) -> PayoutRow:
        """Pay a bolt11 invoice from earnings, the mint's fee from earnings too.

        ``expect_sat``: the amount that was asked for (a Lightning address's invoice): an
        invoice the mint quotes for any other amount is refused before anything is held.
        A payment the mint leaves pending is answered as such and finished by recovery.
        """
        async with self._key_lock(key):
            replay = await self._replay(key)
            if replay is not None:
                _same_ask(
                    replay,
                    replay.kind is kind
                    and replay.destination == (destination or invoice)
                    and mint_url in (None, replay.mint_url),
                )
                return replay
            urls, now = await self._books_with_urls()
            if mint_url is not None:
                order = [self._choose(now, urls, mint_url)]
            else:
                ranked = sorted(now.mints, key=lambda m: -m.withdrawable_msat)
                order = [m.url for m in ranked if m.url in urls and m.withdrawable_msat]
                order = order or urls[:1]
            short: WalletError | None = None
            for mint in order:
                try:
                    quote = await self.wallet.custody.melt_quote(mint, invoice)
                except MintRefused as exc:
                    raise InvoiceRejected(
                        f"the mint will not pay this invoice: {exc.detail or exc.message}"
                    ) from None
                if expect_sat is not None and quote.amount != expect_sat:
                    raise InvoiceAmountMismatch(
                        f"the invoice is for {quote.amount} sat, {expect_sat} sat were asked;"
                        " it is not paid"
                    )
                need = (quote.amount + quote.fee_reserve) * 1000
                hold = need + await self._fee_allowance_sat(mint) * 1000
                try:
                    row = await self._hold(
                        kind, mint, hold, need, key, quote.amount, destination or invoice
                    )
                except InsufficientEarnings as exc:
                    short = exc
                    continue
                return await self._melt(row, mint, quote)
            raise short or InsufficientEarnings("there are no earnings to pay out")

    async def _melt(self, row: PayoutRow, mint: str, quote: MeltQuote) -> PayoutRow:
        with self._working_on(row.id):
            error: tuple[str, str] | None = None
            try:
                await self.wallet.custody.melt(row.account_id, mint, quote)
            except Exception as exc:
                error = _error_code(exc)
                if error is None:
                    raise
            row = await self._settle(row, error)
        if row.state is PayoutState.FAILED:
            raise _error_of(row)
        return row

    # -- closing ------------------------------------------------------------------------

    async def settle_open(self, min_age_s: int = _STALE_AFTER_S) -> int:
        """Close the pending payouts custody is done with (after a crash, a lost answer,
        a payment the mint left pending): none of this process's running ones, and none
        younger than ``min_age_s`` unless written before this process started."""
        before = max(int(time.time()) - min_age_s, self._started_at)
        rows = await self.wallet.store.open_payouts(before)
        closed = 0
        for row in rows:
            if row.id in self._live:
                continue
            settled = await self._settle(row, ("not_sent", "the payout was never sent"))
            if settled.state is not PayoutState.PENDING:
                closed += 1
                log.info("payout %s closed after recovery: %s", row.id, settled.state)
        return closed

    async def _settle(self, row: PayoutRow, error: tuple[str, str] | None) -> PayoutRow:
        """Close the payout from what custody did with its account, in one transaction
        with giving back what that account still holds; pending while custody is busy."""
        settled = await self.wallet.store.settle_payout(row.id, error)
        if settled.state is PayoutState.FAILED:
            log.warning("payout %s failed: %s", settled.id, settled.error)
        return settled

    # -- helpers ------------------------------------------------------------------------

    async def _books_with_urls(self) -> tuple[list[str], Books]:
        urls = await self.wallet.payout_mints()
        return urls, await self.wallet.store.books(urls)

    @staticmethod
    def _choose(books: Books, urls: list[str], chosen: str | None) -> str:
        if chosen is not None:
            url = normalize_mint_url(chosen)
            if url not in urls:
                raise MintUntrusted(f"mint {chosen} is not one this node pays out from")
            return url
        best = max(
            (m for m in books.mints if m.url in urls),
            key=lambda m: m.withdrawable_msat,
            default=None,
        )
        return best.url if best is not None and best.withdrawable_msat else urls[0]

    async def _hold(
        self,
        kind: PayoutKind,
        mint: str,
        hold_msat: int,
        at_least_msat: int,
        key: str | None,
        asked_sat: int | None,
        destination: str | None = None,
    ) -> PayoutRow:
        """Hold ``hold_msat`` of earnings (cut to what the mint's part of the books can
        pay, never below ``at_least_msat``) for a new payout.

        The books are read again and the hold written one payout at a time: a payout
        under way counts against its mint's part at once, so two never take the custody
        that backs that mint's clients. (Earnings as a whole are guarded by the hold's
        conditional update, across processes too.)"""
        async with self._holding:
            _, now = await self._books_with_urls()
            return await self._hold_now(
                kind, mint, now, hold_msat, at_least_msat, key, asked_sat, destination
            )

    async def _hold_now(
        self,
        kind: PayoutKind,
        mint: str,
        now: Books,
        hold_msat: int,
        at_least_msat: int,
        key: str | None,
        asked_sat: int | None,
        destination: str | None,
    ) -> PayoutRow:
        withdrawable = _withdrawable_at(now, mint)
        hold = min(hold_msat, withdrawable)
        if hold < max(at_least_msat, 1000):
            raise InsufficientEarnings(
                f"earnings can pay out {withdrawable // 1000} sat at {mint} now, not"
                f" {-(-max(at_least_msat, 1000) // 1000)} sat (the mint's fee included)",
                available_msat=withdrawable,
            )
        try:
            row = await self.wallet.store.hold_for_payout(
                kind, mint, hold, key, asked_sat, destination
            )
        except PayoutKeyTaken:
            # the same key, written by another process meanwhile: its payout answers
            replay = await self._replay(key)
            if replay is None:
                raise
            return replay
        self._live.add(row.id)  # before anything else runs: the closing round keeps off
        return row

    async def _replay(self, key: str | None) -> PayoutRow | None:
        """The payout made before under this idempotency key, as it stands now."""
        if key is None:
            return None
        row = await self.wallet.store.payout_by_key(key)
        if row is None:
            return None
        if row.state is PayoutState.PENDING and row.id not in self._live:
            row = await self._settle(row, None)
        if row.state is PayoutState.FAILED:
            raise _error_of(row)
        return row

    async def _fee_allowance_sat(self, mint: str) -> int:
        try:
            keysets = await self.wallet.custody.client_for(mint).keysets()
        except MintError:
            return 0
        ppk = max((k.input_fee_ppk for k in keysets.values()), default=0)
        return -(-ppk * _FEE_INPUTS // 1000)

    @contextlib.contextmanager
    def _working_on(self, payout_id: int) -> Iterator[None]:
        self._live.add(payout_id)
        try:
            yield
        finally:
            self._live.discard(payout_id)

    def _key_lock(self, key: str | None) -> asyncio.Lock:
        if key is None:
            return asyncio.Lock()
        if len(self._key_locks) > 1000:
            self._key_locks = {k: v for k, v in self._key_locks.items() if v.locked()}
        return self._key_locks.setdefault(key, asyncio.Lock())

    async def take_lease(self, name: str, holder: str, ttl_s: int) -> bool:
        """Whether this holder does the node-wide job ``name`` now (see WalletStore)."""
        return await self.wallet.store.take_lease(name, holder, ttl_s)


def _withdrawable_at(now: Books, mint: str) -> int:
    here = now.at(mint)
    return min(here.withdrawable_msat, now.withdrawable_msat) if here is not None else 0


def _answer(row: PayoutRow) -> PayoutRow:
    match row.state:
        case PayoutState.FAILED:
            raise _error_of(row)
        case PayoutState.PENDING:
            raise PayoutPending(
                "the mint has not settled this payout yet; it is finished automatically"
            )
    return row


def _error_code(exc: Exception) -> tuple[str, str] | None:
    """The code a payout that custody did not make is closed with (None: not a failure
    of the payout's own, raised on)."""
    match exc:
        case InsufficientBalance():
            return "insufficient_earnings", "earnings cannot pay this plus the mint's fee"
        case InsufficientCustody():
            return "insufficient_mint_liquidity", exc.message
        case MintRefused():
            return "payment_failed", f"the mint refused: {exc.detail or exc.message}"
        case MintError():
            return "mint_error", exc.message
    return None


_ERRORS: dict[str, type[WalletError]] = {
    "insufficient_earnings": InsufficientEarnings,
    "insufficient_mint_liquidity": InsufficientCustody,
    "invalid_invoice": InvoiceRejected,
    "invoice_amount_mismatch": InvoiceAmountMismatch,
}


def _error_of(row: PayoutRow) -> WalletError:
    """A failed payout's error, the same for the request that made it and a repeat."""
    return _ERRORS.get(row.error_code or "", PaymentFailed)(row.error or "the payout failed")


def _same_ask(replay: PayoutRow, same: bool) -> None:
    """An idempotency key answers again only the request it was first given with: the
    same key on another payout is a client's mistake, refused, never the old answer."""
    if not same:
        raise PayoutKeyReused(
            f"this Idempotency-Key was used for payout {replay.id}, asked differently;"
            " use a new key for a new payout"
        )
