"""Payouts against a simple model, on varied programs (Hypothesis): client charges add to
earnings, withdrawals as tokens and to invoices (alone or racing) take from earnings
only, exactly what they paid plus the mint's fee, and are refused beyond them. The
clients' money never moves, and the audit balances after every program."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.ecash import EcashFactory
from support.invoices import fake_invoice
from support.wallets import fund

from routstr_node.demo.mint import LocalMint
from wallet.errors import InsufficientEarnings
from wallet.payouts import PayoutRow, PayoutState
from wallet.service import WalletService


@pytest.fixture
async def wallet(
    node: WalletService, mint: LocalMint, ecash: EcashFactory
) -> tuple[WalletService, int]:
    """The wallet (on each store) with one client account of 20,000 sat at the fee-less
    mint, for every example of a test."""
    account = await fund(node, ecash, mint.url, 20_000)
    return node, account.account_id


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


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
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
                    quote = await service.custody.melt_quote(service.mints.urls[0], invoice)
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
        assert sum(m.in_payout_msat for m in books.mints) == 0
        custody = sum(m.custody_msat for m in books.mints)
        assert custody == sum(m.liabilities_msat for m in books.mints) + books.earnings_msat
    report = await service.audit()
    assert report.balanced and report.difference_msat == 0, report


async def test_one_holder_at_a_time_holds_a_lease(node: WalletService) -> None:
    """What makes one process of several on a database pay out: a lease held by one
    holder, renewed by it, taken over only once it ran out."""
    payouts = node.payouts
    assert await payouts.take_lease("payout", "first", 90)
    assert not await payouts.take_lease("payout", "second", 90)
    assert await payouts.take_lease("payout", "first", 90)  # renewed
    assert await payouts.take_lease("payout", "first", -1)  # renewed, already run out
    assert await payouts.take_lease("payout", "second", 90)  # taken over
    assert not await payouts.take_lease("payout", "first", 90)
    assert await payouts.take_lease("other job", "first", 90)  # a lease per job
