"""The trusted mints: one client each, and the checks a token passes before any swap."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from mints.client import MintClient
from mints.errors import AmountTooSmall, MintUntrusted, UnitUnsupported
from mints.keysets import input_fee, with_input_fee
from mints.token import Token, normalize_mint_url, parse_token


@dataclass(frozen=True, slots=True)
class CheckedToken:
    """A token that passed every local check: trusted mint, sat, worth more than its fee."""

    token: Token
    fee: int  # sat the mint keeps when the token is swapped

    @property
    def value_after_fee(self) -> int:
        return self.token.amount - self.fee


class MintDirectory:
    """Clients for the trusted mints, first one primary."""

    def __init__(self, trusted: list[str], *, timeout_s: float = 30.0) -> None:
        if not trusted:
            raise ValueError("at least one trusted mint is required")
        self.urls = [normalize_mint_url(u) for u in trusted]
        self._timeout_s = timeout_s
        self._clients = {u: MintClient(u, timeout_s=timeout_s) for u in self.urls}
        self._extra: dict[str, MintClient] = {}

    def trust(self, trusted: list[str]) -> None:
        """Trust these mints from now on. A mint no longer trusted keeps its client (among
        the extra ones), so the node can still spend, check and recover what it holds
        there; a mint trusted again takes its client back."""
        if not trusted:
            raise ValueError("at least one trusted mint is required")
        urls = list(dict.fromkeys(normalize_mint_url(u) for u in trusted))
        known = {**self._extra, **self._clients}
        self._clients = {u: known.get(u) or MintClient(u, timeout_s=self._timeout_s) for u in urls}
        self._extra = {u: c for u, c in known.items() if u not in self._clients}
        self.urls = urls

    @property
    def primary(self) -> MintClient:
        return self._clients[self.urls[0]]

    def is_trusted(self, url: str) -> bool:
        return normalize_mint_url(url) in self._clients

    def client(self, url: str) -> MintClient:
        try:
            return self._clients[normalize_mint_url(url)]
        except KeyError:
            raise MintUntrusted(f"mint {url} is not trusted by this node") from None

    def held_client(self, url: str) -> MintClient:
        """The client of a trusted mint, or of one no longer trusted: what the node holds
        there is still spent, checked and recovered. Only for mints the caller knows the
        node holds ecash at (never a URL a client just named)."""
        if self.is_trusted(url):
            return self.client(url)
        return self.extra_client(url)

    def extra_client(self, url: str) -> MintClient:
        """A client for a mint no longer trusted that still owes the node an operation."""
        url = normalize_mint_url(url)
        if url not in self._extra:
            self._extra[url] = MintClient(url, timeout_s=self._timeout_s)
        return self._extra[url]

    def payable_anywhere(self, amount: int) -> int:
        """The sat a token from any trusted mint must carry to be worth ``amount`` to the
        node (the largest over the mints' input fees). From the keysets already known, so
        a 402 never waits for a mint; one not known yet counts as charging none (the 402
        for a token that then falls short names its fee)."""
        gross = amount
        for client in self._clients.values():
            keyset = client.known_active_keyset()
            if keyset is not None:
                gross = max(gross, with_input_fee(amount, keyset))
        return gross

    async def learn_keysets(self) -> None:
        """Ask every trusted mint for its keysets once (at start, in the background): the
        fees a 402 names come from them. A mint that does not answer is asked later,
        when a token of it comes."""
        await asyncio.gather(*(c.keysets() for c in self._clients.values()), return_exceptions=True)

    def clients(self) -> list[MintClient]:
        return list(self._clients.values())

    async def close(self) -> None:
        for c in [*self._clients.values(), *self._extra.values()]:
            await c.close()

    async def check_token(self, text: str) -> CheckedToken:
        """Parse and check a token locally; raises a typed error and never spends anything."""
        token = parse_token(text)
        if token.unit != "sat":
            raise UnitUnsupported(f"unit {token.unit!r} is not supported; only sat")
        client = self.client(token.mint)
        proofs = tuple(await client.resolve_keyset_ids(token.proofs))
        token = Token(mint=client.url, unit=token.unit, proofs=proofs, memo=token.memo)
        fee = input_fee(proofs, await client.keysets())
        if token.amount <= fee:
            raise AmountTooSmall(
                f"token is worth {token.amount} sat, no more than the mint's fee of {fee} sat"
            )
        return CheckedToken(token=token, fee=fee)
