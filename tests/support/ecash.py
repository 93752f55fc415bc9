"""Cashu tokens for tests, made and checked with nutshell's own `Wallet`.

nutshell is an implementation independent of the node, so a token it mints is a fair
input and its verdict on a token the node hands out (redeemable? spent?) is trusted.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any


def _import_nutshell_in_isolation() -> None:
    """Import nutshell's settings from an empty private directory.

    On import nutshell loads `./.env` (else `~/.cashu/.env`) into `os.environ`,
    overriding it, and points its data directory at `~/.cashu`. Importing it from an
    empty directory with an empty `.env` keeps the repo's and the user's files out.
    """
    directory = tempfile.mkdtemp(prefix="routstr-tests-nutshell-")
    atexit.register(shutil.rmtree, directory, True)
    Path(directory, ".env").write_text("# empty on purpose: see tests/support/ecash.py\n")
    previous = os.getcwd()
    os.chdir(directory)
    try:
        from cashu.core.settings import settings
    finally:
        os.chdir(previous)
    settings.cashu_dir = directory
    settings.tor = False
    settings.socks_host = None
    settings.socks_proxy = None
    settings.http_proxy = None
    settings.debug = False


_import_nutshell_in_isolation()

from cashu.core.base import MintQuoteState, Proof, ProofSpentState  # noqa: E402
from cashu.core.split import amount_split  # noqa: E402
from cashu.wallet.helpers import deserialize_token_from_string  # noqa: E402
from cashu.wallet.wallet import Wallet  # noqa: E402

QUOTE_PAID_TIMEOUT_S = 10.0


def sanitize_mint_url(url: str) -> str:
    """Mint URLs as nutshell stores them (no trailing slash)."""
    return url.rstrip("/")


class _MintWallet:
    """One nutshell wallet for one mint; its operations run one at a time.

    nutshell derives secrets from a counter it bumps only after a mint succeeds, so
    two concurrent operations on one wallet would reuse secrets.
    """

    def __init__(self, wallet: Any) -> None:
        self.wallet = wallet
        self.lock = asyncio.Lock()


class EcashFactory:
    """Fresh tokens from, and verdicts on tokens of, any mint the tests run."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._wallets: dict[str, _MintWallet] = {}
        self._creating = asyncio.Lock()

    async def _wallet(self, mint_url: str) -> _MintWallet:
        """The wallet for `mint_url`, created once; creation is serial (see the notes)."""
        url = sanitize_mint_url(mint_url)
        async with self._creating:
            if url not in self._wallets:
                self._wallets[url] = _MintWallet(await self._create_wallet(url))
            return self._wallets[url]

    async def _create_wallet(self, url: str) -> Any:
        name = url.split("://", 1)[-1].replace(":", "-").replace("/", "_")
        directory = self._directory / name
        directory.mkdir(parents=True, exist_ok=True)
        wallet = await Wallet.with_db(url, db=str(directory), name="wallet")
        await wallet.load_mint()  # logs and swallows errors, hence the check below
        if not getattr(wallet, "keyset_id", None):
            raise RuntimeError(f"nutshell wallet could not load the mint at {url}")
        return wallet

    async def token(
        self,
        amount_sat: int,
        *,
        mint_url: str,
        legacy: bool = False,
        split: list[int] | None = None,
    ) -> str:
        """A new cashuB (or cashuA if `legacy`) token worth exactly `amount_sat`, of proofs
        of the amounts in `split` (powers of two) if given."""
        if amount_sat < 1:
            raise ValueError("a token must be worth at least 1 sat")
        if split is not None and sum(split) != amount_sat:
            raise ValueError("the split must add up to the amount")
        mint_wallet = await self._wallet(mint_url)
        async with mint_wallet.lock:
            wallet = mint_wallet.wallet
            quote = await wallet.request_mint(amount_sat)
            await _wait_until_paid(wallet, quote.quote)
            proofs = await wallet.mint(
                amount_sat, quote_id=quote.quote, split=split or amount_split(amount_sat)
            )
            token: str = await wallet.serialize_proofs(proofs, legacy=legacy)
        return token

    async def _proofs(self, token: str) -> tuple[_MintWallet, list[Proof]]:
        decoded = deserialize_token_from_string(token)
        mint_wallet = await self._wallet(decoded.mint)
        proofs: list[Proof] = list(decoded.proofs)
        await mint_wallet.wallet._expand_short_keyset_ids(proofs)
        return mint_wallet, proofs

    async def redeem(self, token: str) -> int:
        """Swap the token's proofs for new ones at its mint; the sats received.

        On a mint with input fees this is the face value minus the swap fee.
        """
        mint_wallet, proofs = await self._proofs(token)
        async with mint_wallet.lock:
            kept, _ = await mint_wallet.wallet.redeem(proofs)
        return sum(p.amount for p in kept)

    async def proof_states(self, token: str) -> list[str]:
        """NUT-07 state of each proof: "UNSPENT", "PENDING" or "SPENT"."""
        mint_wallet, proofs = await self._proofs(token)
        async with mint_wallet.lock:
            response = await mint_wallet.wallet.check_proof_state(proofs)
        return [str(state.state.value) for state in response.states]

    async def is_spent(self, token: str) -> bool:
        """True when every proof of the token is spent (see `proof_states` for mixes)."""
        states = await self.proof_states(token)
        return all(state == ProofSpentState.spent.value for state in states)

    async def close(self) -> None:
        """Release the wallets' database engines."""
        async with self._creating:
            for mint_wallet in self._wallets.values():
                await mint_wallet.wallet.db.engine.dispose()
            self._wallets.clear()

    @staticmethod
    def amount(token: str) -> int:
        """The token's face value in sat."""
        return int(deserialize_token_from_string(token).amount)


async def _wait_until_paid(wallet: Any, quote_id: str) -> None:
    """FakeWallet pays mint quotes at once; wait for the mint to see it."""
    deadline = time.monotonic() + QUOTE_PAID_TIMEOUT_S
    while True:
        quote = await wallet.get_mint_quote(quote_id)
        if quote.state == MintQuoteState.paid:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"mint quote {quote_id} still {quote.state} after 10 s")
        await asyncio.sleep(0.05)
