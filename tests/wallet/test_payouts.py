"""Payouts against a simple model, on varied programs (Hypothesis): client charges add to
earnings, withdrawals as tokens and to invoices (alone or racing) take from earnings
only, exactly what they paid plus the mint's fee, and are refused beyond them. The
clients' money never moves, and the audit balances after every program."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.ecash import EcashFactory
from support.invoices import fake_invoice
from support.wallets import fund, open_wallet

from routstr_node.demo.mint import LocalMint
from wallet.errors import InsufficientEarnings
from wallet.payouts import PayoutRow, PayoutState
from wallet.service import WalletService


@pytest.fixture(scope="module")
async def wallet(
    tmp_path_factory: pytest.TempPathFactory, mint: LocalMint, ecash: EcashFactory
) -> AsyncIterator[tuple[WalletService, int]]:
    """A wallet with one client account of 20,000 sat, for every example."""
    data_dir: Path = tmp_path_factory.mktemp("payouts")
    async with open_wallet(data_dir, [mint.url]) as service:
        account = await fund(service, ecash, mint.url, 20_000)
        yield service, account.account_id


Step = tuple[str, int]
steps = st.lists(
    st.one_of(
        st.tuples(st.just("charge"), st.integers(1, 60_000)),  # msat a request costs
        st.tuples(st.just("token"), st.integers(0, 80)),  # sat; 0: all withdrawable
        st.tuples(st.just("invoice"), st.integers(1, 60)),
        st.tuples(st.just("race"), st.integers(1, 40)),  # three token withdrawals at once
    ),
    min_size=1,
    max_size=8,
)


async def _client(service: WalletService, account_id: int) -> int:
    row = await service.ledger.account(account_id)
    return row.balance_msat + row.reserved_msat


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
async def test_payouts_take_earnings_only_and_exactly(
    wallet: tuple[WalletService, int], program: list[Step]
) -> None:
    service, account_id = wallet
    payouts = service.payouts
    earnings = await service.ledger.earnings_msat()
    client = await _client(service, account_id)

    async def paid_or_refused(row: asyncio.Future[PayoutRow] | PayoutRow) -> int:
        """What a payout took from earnings (0: refused)."""
        try:
            done = await row if isinstance(row, asyncio.Future) else row
        except InsufficientEarnings:
            return 0
        assert done.state is PayoutState.PAID
        assert done.amount_sat is not None and done.fee_sat is not None
        return (done.amount_sat + done.fee_sat) * 1000

    for op, value in program:
        books = await payouts.books()
        withdrawable = books.withdrawable_msat
        match op:
            case "charge":
                cost = min(value, client)
                if cost:
                    reservation = await service.ledger.reserve(account_id, cost)
                    await service.ledger.settle(reservation, cost)
                    client -= cost
                    earnings += cost
            case "token":
                amount = value or None
                try:
                    row = await payouts.withdraw_token(amount)
                except InsufficientEarnings:
                    assert (amount or 1) * 1000 > withdrawable
                    continue
                assert amount is None or row.amount_sat == amount
                assert row.amount_sat is not None and row.amount_sat * 1000 <= withdrawable
                earnings -= await paid_or_refused(row)
            case "invoice":
                invoice = fake_invoice(value)
                try:
                    row = await payouts.pay_invoice(invoice)
                except InsufficientEarnings:
                    quote = await service.custody.melt_quote(books.mints[0].url, invoice)
                    assert (value + quote.fee_reserve) * 1000 > withdrawable
                    continue
                assert row.amount_sat == value
                earnings -= await paid_or_refused(row)
            case "race":
                racing = [asyncio.ensure_future(payouts.withdraw_token(value)) for _ in range(3)]
                taken = [await paid_or_refused(r) for r in racing]
                assert sum(taken) <= withdrawable
                earnings -= sum(taken)
        assert await service.ledger.earnings_msat() == earnings
        assert earnings >= 0
        assert await _client(service, account_id) == client  # not a msat of the client's
        books = await payouts.books()
        [at_mint] = books.mints
        assert at_mint.in_payout_msat == 0
        assert at_mint.custody_msat == at_mint.liabilities_msat + books.earnings_msat
    report = await service.audit()
    assert report.balanced and report.difference_msat == 0, report
