"""The ledger's async face: accounts, reservations, charges; each call one transaction."""

from __future__ import annotations

from mints.token import Token
from wallet.keys import key_hash
from wallet.records import AccountRow, ChargedRequest, RequestTag, Settlement
from wallet.store import WalletStore

_MAX_CACHED_IDS = 100_000


class Ledger:
    def __init__(self, store: WalletStore) -> None:
        self.store = store
        # key hash / token id → account id: saves a database round trip per paid request;
        # rotating a key forgets the account's entries in the same step
        self._ids: dict[str, int] = {}
        self._generation = 0  # bumped around every rotation: lookups overlapping it are not kept

    async def account_id_for_key(self, key: str) -> int | None:
        """The account an sk- or radmin_ key opens (None: no such key)."""
        digest = key_hash(key)
        cached = self._ids.get(digest)
        if cached is not None:
            return cached
        generation = self._generation
        # the client has its keys: a lost create's answer is never repeated from now on
        # (once per account and process; later lookups come from memory)
        row = await self.store.open_account_by_key_hash(digest)
        if row is None:
            return None
        return self._remember(digest, row.id) if generation == self._generation else row.id

    def knows_key_hash(self, digest: str) -> bool:
        """Whether a key with this hash was seen to open an account, from memory alone (no
        database read): what may be trusted before the key itself is checked."""
        return digest in self._ids

    async def account_id_for_token(self, token: Token) -> int | None:
        """The account a token used as a key opened (None: not redeemed as a key here;
        a token that paid one request as X-Cashu opened no key's account)."""
        name = "token:" + token.signed_id
        cached = self._ids.get(name)
        if cached is not None:
            return cached
        row = await self.account_for_token(token)
        return self._remember(name, row.id) if row and row.kind == "token" else None

    def _remember(self, name: str, account_id: int) -> int:
        if len(self._ids) >= _MAX_CACHED_IDS:
            self._ids.clear()
        self._ids[name] = account_id
        return account_id

    async def account(self, account_id: int) -> AccountRow:
        return await self.store.account(account_id)

    async def account_by_api_key(self, api_key: str) -> AccountRow | None:
        digest = key_hash(api_key)
        return await self.store.account_by_key_hash(digest)

    async def account_by_admin_key(self, admin_key: str) -> AccountRow | None:
        digest = key_hash(admin_key)
        return await self.store.account_by_admin_key_hash(digest)

    async def account_for_token(self, token: Token) -> AccountRow | None:
        """The account the token opened here, for the token itself (see account_of_token)."""
        token_id, signatures = token.token_id, token.signatures
        return await self.store.account_of_token(token_id, signatures)

    async def reserve(self, account_id: int, amount_msat: int, purpose: str = "request") -> int:
        """Hold the most a request can cost; raises InsufficientBalance."""
        return await self.store.reserve(account_id, amount_msat, purpose)

    async def settle(
        self, reservation_id: int, charge_msat: int, tag: RequestTag | None = None
    ) -> Settlement:
        """Charge the real cost (capped at the reservation) to earnings; release the rest.
        ``tag`` names the request in the same update (its usage record's safeguard)."""
        return await self.store.settle(reservation_id, charge_msat, tag=tag)

    async def release(self, reservation_id: int) -> Settlement:
        return await self.store.settle(reservation_id, 0)

    async def reservation(self, reservation_id: int) -> Settlement:
        return await self.store.reservation(reservation_id)

    async def settle_open_reservations(self) -> int:
        """At start no request is in flight: an open request reservation is charged what
        its answer delivered before the node stopped (recorded as it streamed), and the
        rest goes back."""
        return await self.store.settle_open_reservations()

    async def record_delivered(
        self, reservation_id: int, delivered_msat: int, tag: RequestTag | None = None
    ) -> None:
        """What an open request's answer has delivered so far: charged at the next start
        if the node dies before the request settles."""
        await self.store.record_delivered(reservation_id, delivered_msat, tag)

    async def charged_requests_after(
        self, after_reservation_id: int, settled_since: int, limit: int = 10_000
    ) -> list[ChargedRequest]:
        """Charged requests by reservation id, for usage records lost in a crash."""
        return await self.store.charged_requests_after(after_reservation_id, settled_since, limit)

    async def last_reservation_id(self) -> int:
        return await self.store.last_reservation_id()

    async def earnings_msat(self) -> int:
        return await self.store.earnings_msat()

    async def book_remainder_to_earnings(self, account_id: int, kind: str) -> int:
        """Move the sub-sat part of a balance to earnings (change is paid in whole sat)."""
        return await self.store.book_remainder_to_earnings(account_id, kind)

    async def rotate_api_key(self, account_id: int, new_key: str) -> None:
        digest = key_hash(new_key)
        self.forget_keys(account_id)
        try:
            await self.store.rotate_api_key(account_id, digest)
        finally:
            self.forget_keys(account_id)

    def forget_keys(self, account_id: int) -> None:
        """Drop what memory holds of the account's keys (they were just replaced)."""
        self._generation += 1
        self._ids = {name: i for name, i in self._ids.items() if i != account_id}
