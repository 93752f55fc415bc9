"""The wallet as the node uses it: open the database, recover, and the money operations."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

from mints.directory import CheckedToken, MintDirectory
from mints.errors import MintRefused, MintUntrusted
from mints.token import Token, normalize_mint_url
from wallet.audit import AuditReport, audit
from wallet.custody import Custody, MeltResult, Received, SentToken
from wallet.errors import (
    AdminKeyTaken,
    InsufficientBalance,
    InsufficientCustody,
    InvalidAmount,
    InvoiceRejected,
    PaymentFailed,
    PaymentInFlight,
    TokenAlreadyRedeemed,
    TokenBeingRedeemed,
)
from wallet.keys import key_hash, token_account_keys
from wallet.ledger import Ledger
from wallet.lightning_in import InvoiceRecord, IssuedKeys, LightningIn, NewInvoice
from wallet.operations import AccountKind, Outcome
from wallet.operations import NewAccount as AccountToOpen
from wallet.payouts import Payouts
from wallet.records import AccountRow, Withdrawal
from wallet.recovery import RecoveryReport, StaleOperations, recover_all
from wallet.request_counts import RequestCounts
from wallet.settings_store import SettingsStore
from wallet.sqlite.store import DB_FILE
from wallet.store import WalletStore
from wallet.stores import store_for

log = logging.getLogger(__name__)

__all__ = ["DB_FILE", "NewAccount", "WalletService"]
STALE_AFTER_S = 60  # a pending operation older than this, not live, is resolved again


@dataclass(frozen=True, slots=True)
class NewAccount:
    account_id: int
    api_key: str
    admin_key: str
    credited_msat: int
    mint_url: str


class WalletService:
    """Custody and ledger over one database, for one node."""

    def __init__(self, data_dir: Path, mints: MintDirectory, database_url: str = "") -> None:
        self.data_dir = data_dir
        self.mints = mints
        self.store: WalletStore = store_for(data_dir, database_url)
        self.ledger = Ledger(self.store)
        self.settings = SettingsStore(self.store)
        self._custody: Custody | None = None
        self._change_locks: dict[int, asyncio.Lock] = {}
        self._lightning_in: LightningIn | None = None
        self._stale: StaleOperations | None = None
        self._recovery: asyncio.Task[RecoveryReport] | None = None
        self._seed = b""
        self.payouts = Payouts(self)

    @property
    def custody(self) -> Custody:
        if self._custody is None:
            raise RuntimeError("wallet is not open")
        return self._custody

    @property
    def request_counts(self) -> RequestCounts | None:
        """Where the rate limiter counts when other processes share this ledger (else the
        limiter counts in memory: one process, no round trip)."""
        if self.store.shared and isinstance(self.store, RequestCounts):
            return self.store
        return None

    async def open(self, *, recover: bool = True) -> RecoveryReport | None:
        """Open the database; with ``recover``, settle what the last run left open and
        resolve its pending operations before returning (tools and tests: a serving node
        uses :meth:`open_for_serving`)."""
        await self.store.open()
        self._seed = await self.store.seed()
        self._custody = Custody(self.store, self.mints, self._seed)
        if not recover:
            return None
        await self._settle_last_run()
        return await self.recover()

    async def open_for_serving(self) -> None:
        """Open, settle the last run's open reservations, and resolve its pending
        operations in the background: a mint that hangs must not keep the node from
        serving; only what touches those operations' proofs waits for them."""
        await self.open(recover=False)
        await self._settle_last_run()
        self._recovery = asyncio.create_task(self.recover(), name="wallet-recovery")

    async def _settle_last_run(self) -> None:
        settled = await self.ledger.settle_open_reservations()
        if settled:
            log.info("%d reservations of the last run settled", settled)

    async def recover(self) -> RecoveryReport:
        """Resolve every pending operation (each mint's beside the others')."""
        report = await recover_all(self.custody)
        await self.payouts.settle_open()  # payouts whose operations were just resolved
        if report.completed or report.failed or report.still_pending:
            log.info(
                "recovery: %d completed, %d failed, %d still pending",
                len(report.completed),
                len(report.failed),
                len(report.still_pending),
            )
        return report

    async def resolve_stale(self, min_age_s: int = STALE_AFTER_S) -> RecoveryReport:
        """Pending operations no request is working on, resolved while the node runs."""
        if self._stale is None:
            self._stale = StaleOperations(self.custody)
        if self.store.shared:  # a process that died left its requests' holds open
            settled = await self.ledger.settle_open_reservations()
            if settled:
                log.info("%d reservations of a process that is gone settled", settled)
        return await self._stale.resolve(min_age_s)

    async def close(self) -> None:
        if self._recovery is not None:
            self._recovery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recovery
            self._recovery = None
        await self.store.close()

    # -- money in ---------------------------------------------------------------------

    async def create_account(
        self, checked: CheckedToken, admin_key: str | None = None
    ) -> NewAccount:
        """A new sk- account funded by a token; the keys are returned, stored hashed.

        The keys are derived from the token and the seed: a create whose answer was lost
        (a timeout, a restart mid-way) is asked again with the same token and answers the
        same keys, as long as neither has been used (then the client clearly has them,
        and a spent token thrown away must not open the account). ``admin_key``, the
        client's own, replaces the derived admin key; asked again, it must be the same.
        """
        api_key, derived_admin_key = token_account_keys(self._seed, checked.token)
        admin = derived_admin_key if admin_key is None else admin_key
        if admin_key is not None and await self._admin_key_taken(admin_key, checked.token):
            raise AdminKeyTaken("this admin_key is taken; choose another")
        opened = AccountToOpen(AccountKind.KEY, key_hash(api_key), key_hash(admin))
        try:
            received = await self.custody.receive(checked, opened)
        except TokenAlreadyRedeemed as exc:
            if exc.account_id is None:
                raise
            account_id = exc.account_id
            again = await self.store.account_with_unused_keys(
                account_id, key_hash(api_key), key_hash(admin)
            )
            if again is None:
                raise
            return NewAccount(
                again.id, api_key, admin, again.balance_msat, again.mint_url or checked.token.mint
            )
        return NewAccount(
            received.account_id, api_key, admin, received.credited_msat, checked.token.mint
        )

    async def _admin_key_taken(self, admin_key: str, token: Token) -> bool:
        """Whether another account has this admin key (a client's own must be new, but
        for the account this very token made: a create asked again)."""
        account = await self.ledger.account_by_admin_key(admin_key)
        if account is None:
            return False
        made = await self.store.account_made_by_token(token.token_id)
        return made != account.id

    async def topup(self, account_id: int, checked: CheckedToken) -> Received:
        return await self.custody.receive(checked, account_id)

    async def redeem_as_key(self, checked: CheckedToken) -> int:
        """The account a token used as an API key stands for, redeeming it on first use."""
        existing = await self.ledger.account_for_token(checked.token)
        if existing is not None:
            return _key_account(existing)
        try:
            received = await self.custody.receive(
                checked, AccountToOpen(AccountKind.TOKEN, token_is_key=True)
            )
        except TokenAlreadyRedeemed:
            # only an account the token itself opened (a concurrent first use) answers to it;
            # a token that funded an sk- account or a topup is spent, not a key
            again = await self.ledger.account_for_token(checked.token)
            if again is not None:
                return _key_account(again)
            raise
        return received.account_id

    async def redeem_for_request(self, checked: CheckedToken, reserve_msat: int) -> Received:
        """An X-Cashu payment: a short-lived account whose remainder becomes change, and the
        request's reservation with its credit (none when the credit falls short), so that
        a refund asked meanwhile never finds the balance free.

        A token whose earlier redeem went through without its request (the mint answered
        too late, the node restarted) pays now from that credit, while nothing else has
        happened on it: the client was told to send the same token again.
        """
        try:
            return await self.custody.receive(
                checked,
                AccountToOpen(AccountKind.XCASHU, token_is_key=True),
                reserve_msat=reserve_msat,
            )
        except TokenAlreadyRedeemed:
            account = await self.ledger.account_for_token(checked.token)
            if account is None or account.kind != "xcashu":
                raise
            account_id = account.id
            try:
                reservation_id = await self.store.reserve_if_untouched(
                    account_id, reserve_msat, "request"
                )
            except InsufficientBalance:  # the credit falls short: the caller's 402
                return Received(account_id, account.balance_msat, checked.fee)
            if reservation_id is None:
                raise
            return Received(account_id, account.balance_msat, checked.fee, reservation_id)

    # -- money out --------------------------------------------------------------------

    async def withdraw_token(
        self,
        account_id: int,
        amount_sat: int | None,
        mint_url: str | None = None,
        *,
        legacy: bool = False,
    ) -> SentToken:
        mint = (await self._mint_order(mint_url, None, own_first=False))[0]
        return await self.custody.send(
            account_id, mint, amount_sat, purpose="withdraw", legacy=legacy
        )

    async def withdrawals(self, account_id: int, limit: int = 100) -> list[Withdrawal]:
        """The account's latest tokens taken out: a client whose answer to a withdraw was
        lost (a timeout, a restart mid-way) finds its token here."""
        return await self.store.withdrawals(account_id, limit)

    async def issue_change(self, account_id: int, *, legacy: bool = False) -> SentToken | None:
        """Everything left on an X-Cashu account as one token; sub-sat rest to earnings.

        One payment has one change token: issuing runs one at a time per account, and a
        change already issued (by a refund that came first) is returned, not made again.
        """
        async with self._change_lock(account_id):
            await self.ledger.book_remainder_to_earnings(account_id, "change_rounding")
            account = await self.ledger.account(account_id)
            if account.balance_msat < 1000:
                issued = await self.store.outgoing_tokens(account_id, "change")
                if not issued:
                    return None
                token, amount = issued[-1]
                return SentToken(token, amount, 0, account.mint_url or self.mints.urls[0])
            # change comes from the primary mint; from the paying mint when the primary is
            # short, also when that mint is no longer trusted (its ecash is still paid out)
            candidates = list(dict.fromkeys([self.mints.urls[0], account.mint_url or ""]))
            candidates = [u for u in candidates if u]
            for mint_url in candidates[:-1]:
                try:
                    return await self.custody.send(
                        account_id, mint_url, None, purpose="change", legacy=legacy
                    )
                except InsufficientCustody:
                    continue
            return await self.custody.send(
                account_id, candidates[-1], None, purpose="change", legacy=legacy
            )

    def _change_lock(self, account_id: int) -> asyncio.Lock:
        if len(self._change_locks) > 10_000:
            self._change_locks = {k: v for k, v in self._change_locks.items() if v.locked()}
        return self._change_locks.setdefault(account_id, asyncio.Lock())

    async def audit(self) -> AuditReport:
        return await audit(self.store, self.mints)

    async def settle_pending_redeem(self, token: Token) -> None:
        """Resolve a redeem of this token left unresolved (a lost answer, a restart), now;
        raises :class:`TokenBeingRedeemed` while it stays so."""
        op_id = await self.store.pending_receive_of_token(token.token_id)
        if op_id is None:
            return
        if self.custody.is_live(op_id, token.token_id):
            raise TokenBeingRedeemed("the token is being redeemed by another request")
        if (await self.custody.resolve_unless_busy(op_id)).outcome is Outcome.PENDING:
            raise TokenBeingRedeemed(
                "the token's redeem waits for its mint to answer; ask again shortly"
            )

    async def change_of(self, token: Token) -> tuple[str, int] | None:
        """The change token of an X-Cashu payment (issued now if it was not yet)."""
        # one snapshot: the credit is in, or not
        account, being_redeemed = await self.store.token_account_and_redeeming(
            token.token_id, token.signatures
        )
        if account is None and being_redeemed:
            # swapped at the mint, or not, and not credited yet: resolved now, when the
            # mint answers (else the caller hears to ask again shortly)
            await self.settle_pending_redeem(token)
            account = await self.ledger.account_for_token(token)
        if account is None or account.kind != "xcashu":
            return None
        if account.reserved_msat:
            # the payment's request is still in flight: its change is not known yet
            raise PaymentInFlight("the request this token pays for is still running")
        sent = await self.issue_change(account.id)
        return (sent.token, sent.amount_sat) if sent is not None else ("", 0)

    # -- the wallet API: withdrawals, refunds, Lightning ------------------------------

    async def payout_mints(self) -> list[str]:
        """The mints money can be paid out from: the trusted ones (primary first), then
        those no longer trusted where custody still holds ecash."""
        held = await self.store.held_mint_urls()
        return [*self.mints.urls, *(u for u in held if not self.mints.is_trusted(u))]

    async def _mint_order(
        self, chosen: str | None, account_mint: str | None, *, own_first: bool
    ) -> list[str]:
        """Where to take money from: the chosen mint only, else primary (or the account's own
        mint first, for refunds), then every other trusted mint, then the mints no longer
        trusted where custody still holds ecash: distrusting a mint freezes nobody's money."""
        order = await self.payout_mints()
        if chosen is not None:
            url = normalize_mint_url(chosen)
            if url not in order:
                raise MintUntrusted(f"mint {chosen} is not trusted by this node")
            return [url]
        if account_mint is not None and normalize_mint_url(account_mint) in order:
            own = normalize_mint_url(account_mint)
            order.remove(own)
            # second after the primary, unless it is the primary (or goes first); a mint no
            # longer trusted goes last, except for a refund of its own token
            if own_first or own == self.mints.urls[0]:
                order.insert(0, own)
            elif self.mints.is_trusted(own):
                order.insert(1, own)
            else:
                order.append(own)
        return order

    async def withdraw(
        self,
        account_id: int,
        amount_sat: int | None,
        mint_url: str | None = None,
        *,
        purpose: str = "withdraw",
        legacy: bool = False,
    ) -> SentToken:
        """A token of ``amount_sat`` (None: all the account can spend, its reserved part
        excluded); from the chosen mint, else the first trusted mint holding enough."""
        if amount_sat is not None and (type(amount_sat) is not int or amount_sat <= 0):
            raise InvalidAmount("amount must be a positive integer of sat")
        account = await self.ledger.account(account_id)
        if amount_sat is not None and amount_sat * 1000 > account.balance_msat:
            raise InsufficientBalance(
                f"the account can spend {account.balance_msat // 1000} sat, not {amount_sat}",
                needed_msat=amount_sat * 1000,
                available_msat=account.balance_msat,
            )
        if account.balance_msat < 1000:
            raise InsufficientBalance(
                "the account has nothing to withdraw",
                needed_msat=1000,
                available_msat=account.balance_msat,
            )
        short: InsufficientCustody | None = None
        own_first = purpose == "refund"
        for mint in await self._mint_order(mint_url, account.mint_url, own_first=own_first):
            try:
                return await self.custody.send(
                    account_id, mint, amount_sat, purpose=purpose, legacy=legacy
                )
            except InsufficientCustody as exc:
                short = exc
        assert short is not None
        raise short

    async def withdraw_invoice(
        self, account_id: int, invoice: str, mint_url: str | None = None
    ) -> MeltResult:
        """Pay a bolt11 invoice from the account.

        The mint's fee reserve is checked against what the account can spend before any
        proof moves; the melt holds amount + reserve and returns what the payment did not use.
        """
        account = await self.ledger.account(account_id)
        short: InsufficientCustody | None = None
        for mint in await self._mint_order(mint_url, account.mint_url, own_first=False):
            try:
                quote = await self.custody.melt_quote(mint, invoice)
            except MintRefused as exc:
                raise InvoiceRejected(
                    f"the mint will not pay this invoice: {exc.detail or exc.message}"
                ) from None
            try:
                return await self.custody.melt(account_id, mint, quote)
            except InsufficientCustody as exc:
                short = exc
            except MintRefused as exc:
                raise PaymentFailed(
                    f"the payment failed and nothing was charged: {exc.detail or exc.message}"
                ) from None
        assert short is not None
        raise short

    async def refund(
        self, account_id: int, mint_url: str | None = None, *, legacy: bool = False
    ) -> SentToken:
        """Everything the account can spend as one token (Routstr's refund).

        A retry after a lost answer gets the same token, but only while nothing has
        happened on the account since and the token is still unspent at its mint: an old
        refund is never handed out again once money went back into the account.
        """
        account = await self.ledger.account(account_id)
        if account.balance_msat < 1000:
            replay = await self._replayable_refund(account_id)
            if replay is not None:
                return replay
        return await self.withdraw(account_id, None, mint_url, purpose="refund", legacy=legacy)

    async def _replayable_refund(self, account_id: int) -> SentToken | None:
        found = await self.store.last_refund_if_untouched(account_id)
        if found is None or not found.ys:
            return None
        states = await self.custody.client_for(found.mint_url).check_state(found.ys)
        if any(state != "UNSPENT" for state in states.values()):
            return None
        return SentToken(found.token, found.amount_sat, 0, found.mint_url)

    @property
    def lightning_in(self) -> LightningIn:
        if self._lightning_in is None or self._lightning_in.custody is not self.custody:
            self._lightning_in = LightningIn(self.custody)
        return self._lightning_in

    async def create_invoice(self, amount_sat: int, account_id: int | None = None) -> NewInvoice:
        """A Lightning invoice from the primary mint; paid, it tops up ``account_id`` or
        creates an account whose keys go to the holder of the returned secret."""
        return await self.lightning_in.create(amount_sat, account_id, self.mints.urls[0])

    async def invoice(self, invoice_id: str, *, refresh: bool = True) -> InvoiceRecord:
        """The invoice's state, after asking the mint (and minting, once it is paid)."""
        if refresh:
            return await self.lightning_in.refresh(invoice_id)
        return await self.lightning_in.get(invoice_id)

    async def claim_invoice_keys(self, invoice_id: str, secret: str) -> IssuedKeys | None:
        keys = await self.lightning_in.deliver_keys(invoice_id, secret)
        if keys is not None:  # keys handed over again: the ones before stop working now
            self.ledger.forget_keys(keys.account_id)
        return keys

    async def poll_invoices(self) -> int:
        return await self.lightning_in.poll()


def _key_account(account: AccountRow) -> int:
    """A token's account as a key's: not one it opened by paying a request as X-Cashu
    (that one's remainder is the request's change, claimed by refund)."""
    if account.kind != "token":
        raise TokenAlreadyRedeemed("the token paid for a request; it is not a key here")
    return account.id
