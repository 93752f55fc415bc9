"""A mint that rotates its keys under a node that keeps running.

When a mint rotates (nutshell's RotateNextKeyset, or a new derivation path at a restart),
a new keyset signs and the old one is marked inactive: it signs no more outputs, while
its proofs stay spendable. The node's listing of the mint's keysets still names the old
one as active, so its first swap, melt or mint after the rotation is refused. The
refusal proves nothing happened, so the node reads the keysets again and goes on with
the new one, within that very operation.

The rotation here is what nutshell's own rotation leaves behind: the old keyset's row
set inactive in the mint's database, and the mint started on a new derivation path.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, closing
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.ecash import EcashFactory
from support.invoices import fake_invoice
from support.wallets import fund, open_wallet, query

from mints.client import MintClient, _mint_error
from mints.errors import KeysetInactive, MintRefused, ProofsSpent
from mints.token import parse_token
from routstr_node.demo.mint import LOOPBACK, free_port, run_local_mint
from wallet.service import NewAccount, WalletService


@dataclass
class Rotation:
    """A node wallet with an account funded on the mint's first keyset."""

    wallet: WalletService
    account: NewAccount
    old_token: str  # made on the first keyset, not redeemed yet
    first_keyset: str
    mint_dir: Path
    url: str
    running: AsyncExitStack

    async def rotate(self) -> str:
        """Stop the mint, mark its keysets inactive, start it on a new keyset; its id."""
        await self.running.aclose()
        database = next((self.mint_dir / "mintdb").glob("*.sqlite3"))
        with closing(sqlite3.connect(database)) as conn, conn:
            conn.execute("UPDATE keysets SET active = 0")
        port = int(self.url.rsplit(":", 1)[1])
        await self.running.enter_async_context(
            run_local_mint(
                self.mint_dir, port=port, settings={"MINT_DERIVATION_PATH": "m/0'/0'/1'"}
            )
        )
        return await active_keyset_id(self.url)

    def cached_active(self) -> str:
        known = self.wallet.mints.primary.known_active_keyset()
        assert known is not None
        return known.id


async def active_keyset_id(url: str) -> str:
    client = MintClient(url)
    try:
        return (await client.active_keyset()).id
    finally:
        await client.close()


@asynccontextmanager
async def rotation(tmp_path: Path) -> AsyncIterator[Rotation]:
    url = f"http://{LOOPBACK}:{free_port()}"
    ecash = EcashFactory(tmp_path / "ecash")
    running = AsyncExitStack()
    try:
        async with open_wallet(tmp_path / "node", [url]) as wallet:
            port = int(url.rsplit(":", 1)[1])
            await running.enter_async_context(run_local_mint(tmp_path / "mint", port=port))
            account = await fund(wallet, ecash, url, 200)
            old_token = await ecash.token(64, mint_url=url)
            first = (await wallet.mints.primary.active_keyset()).id
            yield Rotation(wallet, account, old_token, first, tmp_path / "mint", url, running)
    finally:
        await running.aclose()
        await ecash.close()


def on_keyset(token: str, keyset_id: str) -> bool:
    """Every proof of the token is on the keyset (V4 tokens carry short ids)."""
    return all(keyset_id.startswith(p.keyset_id) for p in parse_token(token).proofs)


async def test_a_withdrawal_after_a_rotation_is_made_on_the_new_keyset(tmp_path: Path) -> None:
    async with rotation(tmp_path) as mint:
        second = await mint.rotate()
        assert mint.cached_active() == mint.first_keyset  # the node has not looked yet

        sent = await mint.wallet.withdraw(mint.account.account_id, 21)  # a swap with change

        assert sent.amount_sat == 21 and on_keyset(sent.token, second)
        assert mint.cached_active() == second
        other = EcashFactory(tmp_path / "other")
        try:
            assert await other.redeem(sent.token) == 21
        finally:
            await other.close()
        again = await mint.wallet.withdraw(mint.account.account_id, 13)
        assert on_keyset(again.token, second)
        account = await mint.wallet.ledger.account(mint.account.account_id)
        assert account.balance_msat == (200 - 21 - 13) * 1000
        assert (await mint.wallet.audit()).balanced


async def test_a_token_of_the_old_keyset_is_redeemed_after_a_rotation(tmp_path: Path) -> None:
    """Its proofs are on the inactive keyset (still spendable); the new ones on the new."""
    async with rotation(tmp_path) as mint:
        second = await mint.rotate()

        created = await mint.wallet.create_account(
            await mint.wallet.mints.check_token(mint.old_token)
        )

        assert created.credited_msat == 64_000
        assert mint.cached_active() == second
        stored = query(
            mint.wallet.data_dir,
            "SELECT keyset_id, SUM(amount) FROM proofs WHERE state = 'unspent' GROUP BY keyset_id",
        )
        assert dict(stored) == {mint.first_keyset: 200, second: 64}
        assert (await mint.wallet.audit()).balanced


async def test_an_invoice_paid_after_a_rotation_gets_its_change_on_the_new_keyset(
    tmp_path: Path,
) -> None:
    async with rotation(tmp_path) as mint:
        second = await mint.rotate()

        paid = await mint.wallet.withdraw_invoice(mint.account.account_id, fake_invoice(50))

        assert paid.state == "PAID" and paid.amount_sat == 50
        assert mint.cached_active() == second
        account = await mint.wallet.ledger.account(mint.account.account_id)
        assert account.balance_msat == (200 - 50 - paid.fee_sat) * 1000
        assert (await mint.wallet.audit()).balanced


async def test_an_invoice_paid_before_a_rotation_is_minted_on_the_new_keyset(
    tmp_path: Path,
) -> None:
    """The outputs written for the old keyset are never signed: the node gives them up
    and mints the paid quote afresh, instead of asking with them forever."""
    async with rotation(tmp_path) as mint:
        invoice = await mint.wallet.create_invoice(100, mint.account.account_id)  # paid at once
        second = await mint.rotate()

        states = []
        for _ in range(3):
            record = await mint.wallet.invoice(invoice.invoice_id)
            states.append(record.state)
            if record.state == "paid":
                break

        assert states[-1] == "paid", states
        assert mint.cached_active() == second
        account = await mint.wallet.ledger.account(mint.account.account_id)
        assert account.balance_msat == 300_000
        minted = query(
            mint.wallet.data_dir,
            "SELECT SUM(amount) FROM proofs WHERE state = 'unspent' AND keyset_id = ?",
            [second],
        )
        assert minted == [(100,)]
        assert (await mint.wallet.audit()).balanced


async def test_the_keysets_are_read_again_once_the_listing_is_old(tmp_path: Path) -> None:
    """Before any refusal: a listing older than its age limit is read again."""
    async with rotation(tmp_path) as mint:
        fresh = MintClient(mint.url, keysets_max_age_s=0)
        cached = MintClient(mint.url)
        try:
            assert (await fresh.active_keyset()).id == mint.first_keyset
            assert (await cached.active_keyset()).id == mint.first_keyset
            second = await mint.rotate()
            assert (await fresh.active_keyset()).id == second
            assert (await cached.active_keyset()).id == mint.first_keyset  # not old yet
        finally:
            await fresh.close()
            await cached.close()


@pytest.mark.parametrize(
    ("code", "detail", "kind"),
    [
        (11000, "keyset id inactive.", KeysetInactive),  # nutshell
        (11000, "keyset id unknown.", KeysetInactive),
        (12001, "Keyset is not known", KeysetInactive),  # NUT error codes
        (12002, "Keyset is inactive, cannot sign messages", KeysetInactive),
        (11001, "Token already spent.", ProofsSpent),
        (11000, "no outputs provided.", MintRefused),
    ],
)
def test_which_refusals_mean_a_rotated_keyset(
    code: int, detail: str, kind: type[MintRefused]
) -> None:
    error = _mint_error(400, {"code": code, "detail": detail})
    assert type(error) is kind
