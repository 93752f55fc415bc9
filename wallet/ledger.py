"""The ledger's async face: accounts, reservations, charges; each call one transaction."""

from __future__ import annotations

from typing import Any

from wallet.errors import AccountNotFound
from wallet.keys import key_hash
from wallet.sqlite import ledger as sql
from wallet.sqlite.database import Database
from wallet.sqlite.ledger import AccountRow, Settlement


class Ledger:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def account(self, account_id: int) -> AccountRow:
        return await self.db.read(lambda c: sql.get_account(c, account_id))

    async def account_by_api_key(self, api_key: str) -> AccountRow | None:
        digest = key_hash(api_key)
        return await self.db.read(lambda c: sql.find_account(c, "key_hash", digest))

    async def account_by_admin_key(self, admin_key: str) -> AccountRow | None:
        digest = key_hash(admin_key)
        return await self.db.read(lambda c: sql.find_account(c, "admin_key_hash", digest))

    async def account_by_token_id(self, token_id: str) -> AccountRow | None:
        return await self.db.read(lambda c: sql.find_account(c, "token_id", token_id))

    async def reserve(self, account_id: int, amount_msat: int, purpose: str = "request") -> int:
        """Hold the most a request can cost; raises InsufficientBalance."""
        return await self.db.write(lambda c: sql.reserve(c, account_id, amount_msat, purpose))

    async def settle(self, reservation_id: int, charge_msat: int) -> Settlement:
        """Charge the real cost (capped at the reservation) to earnings; release the rest."""
        return await self.db.write(lambda c: sql.settle(c, reservation_id, charge_msat))

    async def release(self, reservation_id: int) -> Settlement:
        return await self.db.write(lambda c: sql.settle(c, reservation_id, 0))

    async def reservation(self, reservation_id: int) -> Settlement:
        return await self.db.read(lambda c: sql.reservation_state(c, reservation_id))

    async def release_open_reservations(self) -> int:
        """At start no request is in flight: every open request reservation goes back."""

        def txn(c: Any) -> int:
            ids = [
                r[0]
                for r in c.execute(
                    "SELECT id FROM reservations WHERE state = 'open' AND purpose = 'request'"
                )
            ]
            for rid in ids:
                sql.settle(c, rid, 0)
            return len(ids)

        return await self.db.write(txn)

    async def earnings_msat(self) -> int:
        return await self.db.read(sql.earnings_msat)

    async def book_remainder_to_earnings(self, account_id: int, kind: str) -> int:
        """Move the sub-sat part of a balance to earnings (change is paid in whole sat)."""

        def txn(c: Any) -> int:
            account = sql.get_account(c, account_id)
            remainder = account.balance_msat % 1000
            sql.debit_to_earnings(c, account_id, remainder, kind=kind)
            return remainder

        return await self.db.write(txn)

    async def rotate_api_key(self, account_id: int, new_key: str) -> None:
        digest = key_hash(new_key)

        def txn(c: Any) -> None:
            cur = c.execute("UPDATE accounts SET key_hash = ? WHERE id = ?", (digest, account_id))
            if cur.rowcount != 1:
                raise AccountNotFound(f"no account {account_id}")

        await self.db.write(txn)
