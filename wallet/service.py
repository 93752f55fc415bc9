"""The wallet as the node uses it: open the database, recover, and the money operations."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mints.directory import CheckedToken, MintDirectory
from wallet.audit import AuditReport, audit
from wallet.custody import Custody, Received, SentToken
from wallet.errors import InsufficientCustody, TokenAlreadyRedeemed
from wallet.keys import key_hash, new_admin_key, new_api_key
from wallet.ledger import Ledger
from wallet.recovery import RecoveryReport, recover_all
from wallet.seed import load_or_create_seed
from wallet.sqlite.custody import outgoing_tokens
from wallet.sqlite.database import Database

log = logging.getLogger(__name__)

DB_FILE = "wallet.sqlite3"


@dataclass(frozen=True, slots=True)
class NewAccount:
    account_id: int
    api_key: str
    admin_key: str
    credited_msat: int
    mint_url: str


class WalletService:
    """Custody and ledger over one database, for one node."""

    def __init__(self, data_dir: Path, mints: MintDirectory) -> None:
        self.data_dir = data_dir
        self.mints = mints
        self.db = Database(data_dir / DB_FILE)
        self.ledger = Ledger(self.db)
        self._custody: Custody | None = None

    @property
    def custody(self) -> Custody:
        if self._custody is None:
            raise RuntimeError("wallet is not open")
        return self._custody

    async def open(self, *, recover: bool = True) -> RecoveryReport | None:
        seed = load_or_create_seed(self.data_dir)
        await self.db.open()
        self._custody = Custody(self.db, self.mints, seed)
        if not recover:
            return None
        report = await recover_all(self.custody)
        released = await self.ledger.release_open_reservations()
        if report.completed or report.failed or report.still_pending or released:
            log.info(
                "recovery: %d completed, %d failed, %d still pending, %d reservations released",
                len(report.completed),
                len(report.failed),
                len(report.still_pending),
                released,
            )
        return report

    async def close(self) -> None:
        await self.db.close()

    # -- money in ---------------------------------------------------------------------

    async def create_account(self, checked: CheckedToken) -> NewAccount:
        """A new sk- account funded by a token; the keys are returned once, stored hashed."""
        api_key, admin_key = new_api_key(), new_admin_key()
        intent: dict[str, Any] = {
            "create": {
                "kind": "key",
                "key_hash": key_hash(api_key),
                "admin_key_hash": key_hash(admin_key),
            }
        }
        received = await self.custody.receive(checked, intent)
        return NewAccount(
            received.account_id, api_key, admin_key, received.credited_msat, checked.token.mint
        )

    async def topup(self, account_id: int, checked: CheckedToken) -> Received:
        return await self.custody.receive(checked, {"account_id": account_id})

    async def redeem_as_key(self, checked: CheckedToken) -> int:
        """The account a token used as an API key stands for, redeeming it on first use."""
        existing = await self.ledger.account_by_token_id(checked.token.token_id)
        if existing is not None:
            return existing.id
        try:
            received = await self.custody.receive(
                checked, {"create": {"kind": "token", "token_id": "$token"}}
            )
        except TokenAlreadyRedeemed as exc:
            if exc.account_id is not None:
                return exc.account_id
            raise
        return received.account_id

    async def redeem_for_request(self, checked: CheckedToken) -> Received:
        """An X-Cashu payment: a short-lived account whose remainder becomes change."""
        return await self.custody.receive(
            checked, {"create": {"kind": "xcashu", "token_id": "$token"}}
        )

    # -- money out --------------------------------------------------------------------

    async def withdraw_token(
        self,
        account_id: int,
        amount_sat: int | None,
        mint_url: str | None = None,
        *,
        legacy: bool = False,
    ) -> SentToken:
        mint = mint_url or self.mints.urls[0]
        return await self.custody.send(
            account_id, mint, amount_sat, purpose="withdraw", legacy=legacy
        )

    async def issue_change(self, account_id: int, *, legacy: bool = False) -> SentToken | None:
        """Everything left on an X-Cashu account as one token; sub-sat rest to earnings."""
        await self.ledger.book_remainder_to_earnings(account_id, "change_rounding")
        account = await self.ledger.account(account_id)
        if account.balance_msat < 1000:
            return None
        # change comes from the primary mint; from the paying mint when the primary is short
        candidates = list(dict.fromkeys([self.mints.urls[0], account.mint_url or ""]))
        candidates = [u for u in candidates if u and self.mints.is_trusted(u)]
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

    async def audit(self) -> AuditReport:
        return await audit(self.db, self.mints)

    async def change_of(self, token_id: str) -> tuple[str, int] | None:
        """The change token of an X-Cashu payment (issued now if it was not yet)."""
        account = await self.ledger.account_by_token_id(token_id)
        if account is None or account.kind != "xcashu":
            return None
        if account.balance_msat >= 1000:
            await self.issue_change(account.id)
        tokens = await self.db.read(lambda c: outgoing_tokens(c, account.id, "change"))
        if not tokens:
            return "", 0
        return tokens[-1]
