"""Automatic payouts to a Lightning address (``[payout]``, contract section 13).

Every ``interval_minutes`` the node pays what its earnings can pay at one mint, when
that is at least ``min_sat``, to the address: an invoice asked for that amount, checked
against it, paid by melt from earnings (the mint's fee too). A failure is logged and the
next interval tries again. The earnings a payout spends leave earnings in the
transaction that writes it down, before the mint is asked: they are never paid twice,
also across a restart. With several processes on one database, the one holding the
"payout" lease pays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from routstr_node.lightning_address import LightningAddressError, invoice_for
from routstr_node.state import NODE, NodeState
from wallet import InsufficientEarnings, PayoutKind, PayoutRow, WalletError

log = logging.getLogger(__name__)

BEAT_S = 30.0  # how often the lease is renewed and the interval checked
FIRST_AFTER_S = 5.0  # the first round after start, once recovery had its moment
LEASE = "payout"
LEASE_TTL_S = 90  # a holder that stops renewing is replaced after this
_FEE_TRIES = 3


@dataclass
class PayoutJob:
    """This process's automatic payouts: who it is for the lease, when it last tried."""

    session: aiohttp.ClientSession
    holder: str = field(default_factory=lambda: uuid.uuid4().hex)
    last_round: float | None = None
    last_error: str | None = None
    running: asyncio.Lock = field(default_factory=asyncio.Lock)


PAYOUT_JOB = web.AppKey("payout_job", PayoutJob)


async def payout_context(app: web.Application) -> AsyncIterator[None]:
    job = PayoutJob(aiohttp.ClientSession())
    app[PAYOUT_JOB] = job
    task = asyncio.create_task(_beat(app, job), name="payouts")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await job.session.close()


async def _beat(app: web.Application, job: PayoutJob) -> None:
    await asyncio.sleep(FIRST_AFTER_S)
    while True:
        node = app.get(NODE)
        if node is not None:
            try:
                await _round(node, job)
            except Exception as exc:
                log.warning("payouts: this round failed: %s", type(exc).__name__)
        await asyncio.sleep(BEAT_S)


async def _round(node: NodeState, job: PayoutJob) -> None:
    config = node.settings.payout
    if not config.lightning_address:
        return
    if not await node.wallet.payouts.take_lease(LEASE, job.holder, LEASE_TTL_S):
        return
    now = time.monotonic()
    if job.last_round is not None and now - job.last_round < config.interval_minutes * 60:
        return
    job.last_round = now
    await pay_out(node, job)


async def pay_out(node: NodeState, job: PayoutJob) -> PayoutRow | None:
    """One payout to the configured address now, when earnings reach ``min_sat`` (None:
    nothing to pay). Failures are logged, kept for the panel, and raised."""
    config = node.settings.payout
    address = config.lightning_address
    if not address:
        return None
    async with job.running:
        try:
            row = await _pay(node, job, address, max(config.min_sat, 1))
        except (WalletError, LightningAddressError) as exc:
            job.last_error = exc.message
            log.warning("payout to %s failed, tried again next interval: %s", address, exc.message)
            raise
        job.last_error = None
        if row is not None:
            log.info(
                "paid %d sat of earnings to %s (fee %s sat)", row.asked_sat, address, row.fee_sat
            )
        return row


async def _pay(node: NodeState, job: PayoutJob, address: str, min_sat: int) -> PayoutRow | None:
    payouts = node.wallet.payouts
    books = await payouts.books()
    best = max(books.mints, key=lambda m: m.withdrawable_msat, default=None)
    if best is None:
        return None
    available = min(best.withdrawable_msat, books.withdrawable_msat) // 1000
    # the mint's fee reserve is known only once it quotes the invoice: guess, and guess
    # higher when the guess left too little
    reserve = max(2, -(-available // 100))
    for _ in range(_FEE_TRIES):
        amount = available - reserve
        if amount < min_sat:
            return None
        invoice = await invoice_for(job.session, address, amount)
        try:
            return await payouts.pay_invoice(
                invoice,
                best.url,
                expect_sat=amount,
                kind=PayoutKind.LIGHTNING_ADDRESS,
                destination=address,
            )
        except InsufficientEarnings:
            reserve *= 2
    return None
