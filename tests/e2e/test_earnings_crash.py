"""The node killed (SIGKILL) in the middle of paying its earnings: to an invoice, as a token.

The melt is held at the fault proxy, the node is killed, and only then does the melt
reach the mint, which pays: the node never hears of it. At the next start the payout is
resolved by the one rule (the quote's state, NUT-09 restore of the change) and closed:
paid once, its fee from earnings, the clients' money untouched, the books balanced; the
same request again (same Idempotency-Key) answers the payment and pays nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support.accounts import funded_auth
from support.e2e import chat_body, get, post, until
from support.ecash import EcashFactory
from support.invoices import fake_invoice
from support.mint_proxy import MintProxy
from support.node import node_toml
from support.node_process import NodeProcess
from support.wallets import query

from routstr_node.audit_command import run_audit
from routstr_node.config import load_settings
from routstr_node.demo.upstream import RunningUpstream

MELT = "POST /v1/melt/bolt11"
SWAP = "POST /v1/swap"
PASSWORD = "crash admin password"
ADMIN = {"Cookie": f"admin_password={PASSWORD}"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def node(
    tmp_path: Path, proxy: MintProxy, upstream: RunningUpstream
) -> AsyncIterator[NodeProcess]:
    port = _free_port()
    config = tmp_path / "node.toml"
    extra = f'[admin]\npassword = "{PASSWORD}"\n[limits]\nrequests_per_minute = 6000\n'
    config.write_text(
        node_toml(tmp_path / "data", port, [proxy.url], upstream.url, extra, mint_timeout_s=1.5)
    )
    running = NodeProcess(config, port)
    await running.start()
    try:
        yield running
    finally:
        await running.kill()


async def _books(node: NodeProcess) -> dict[str, Any]:
    answer = await get(f"{node.url}/admin/api/balances", ADMIN)
    assert answer.status == 200, answer.raw
    totals: dict[str, Any] = answer.body["totals"]
    return totals


async def test_killed_mid_earnings_melt_it_is_paid_once_and_nothing_is_lost(
    node: NodeProcess, proxy: MintProxy, ecash: EcashFactory
) -> None:
    auth = await funded_auth(node.url, ecash, proxy.url, 2000)
    for i in range(5):
        answer = await post(
            f"{node.url}/v1/chat/completions", chat_body(f"earn {i}", max_tokens=30), auth
        )
        assert answer.status == 200, answer.raw
    before = await _books(node)
    amount = before["earnings_msat"] // 1000 // 2
    invoice = fake_invoice(amount)
    key = {**ADMIN, "Idempotency-Key": "crash-payout"}
    withdraw = f"{node.url}/admin/api/withdraw"

    proxy.hold(MELT)
    sent = asyncio.ensure_future(post(withdraw, {"invoice": invoice}, key))
    await proxy.came(MELT)
    await node.kill()
    with contextlib.suppress(aiohttp.ClientError):
        await sent  # the operator's connection died with the node
    proxy.release()
    await proxy.reached(MELT)
    await node.start()

    async def closed() -> list[dict[str, Any]] | None:
        answer = await get(f"{node.url}/admin/api/payouts", ADMIN)
        assert answer.status == 200, answer.raw
        payouts: list[dict[str, Any]] = answer.body["payouts"]
        return payouts if payouts and payouts[0]["state"] != "pending" else None

    # a payment the mint was still making at the start is asked about again by the
    # background round once a minute old
    [payout] = await until(closed, timeout_s=120)
    assert payout["state"] == "paid" and payout["amount"] == amount
    fee = payout["fee"]
    assert fee >= 0
    after = await _books(node)
    assert after["earnings_msat"] == before["earnings_msat"] - (amount + fee) * 1000
    assert after["liabilities_msat"] == before["liabilities_msat"]
    assert after["in_payout_msat"] == 0

    again = await post(withdraw, {"invoice": invoice}, key)
    assert again.status == 200, again.raw
    assert again.body == {"paid": True, "amount": amount, "fee": fee}
    assert query(
        load_settings(node.config).node.data_dir,
        "SELECT COUNT(*) FROM operations WHERE kind = 'melt'",
    ) == [(1,)]
    assert (await _books(node))["earnings_msat"] == after["earnings_msat"]
    report = await run_audit(load_settings(node.config))
    assert report["balanced"] and report["difference_msat"] == 0, report


async def test_killed_mid_earnings_swap_the_token_is_listed_and_answered_again(
    node: NodeProcess, proxy: MintProxy, ecash: EcashFactory
) -> None:
    # custody holds the account's 2000 sat as 1024+512+256+128+64+16: 3 sat needs a swap
    auth = await funded_auth(node.url, ecash, proxy.url, 2000)
    for i in range(3):
        answer = await post(
            f"{node.url}/v1/chat/completions", chat_body(f"earn {i}", max_tokens=30), auth
        )
        assert answer.status == 200, answer.raw
    before = await _books(node)
    key = {**ADMIN, "Idempotency-Key": "crash-token"}
    withdraw = f"{node.url}/admin/api/withdraw"

    proxy.hold(SWAP)
    sent = asyncio.ensure_future(post(withdraw, {"amount": 3}, key))
    await proxy.came(SWAP)
    await node.kill()
    with contextlib.suppress(aiohttp.ClientError):
        await sent
    proxy.release()
    await proxy.reached(SWAP)
    await node.start()

    async def closed() -> list[dict[str, Any]] | None:
        answer = await get(f"{node.url}/admin/api/payouts", ADMIN)
        assert answer.status == 200, answer.raw
        payouts: list[dict[str, Any]] = answer.body["payouts"]
        return payouts if payouts and payouts[0]["state"] != "pending" else None

    [payout] = await until(closed, timeout_s=120)
    assert payout["state"] == "paid" and payout["amount"] == 3
    again = await post(withdraw, {"amount": 3}, key)
    assert again.status == 200, again.raw
    assert again.body["cashu_token"] == payout["cashu_token"]
    assert await ecash.redeem(payout["cashu_token"]) == 3
    after = await _books(node)
    assert after["earnings_msat"] == before["earnings_msat"] - (3 + payout["fee"]) * 1000
    assert after["liabilities_msat"] == before["liabilities_msat"]
    report = await run_audit(load_settings(node.config))
    assert report["balanced"] and report["difference_msat"] == 0, report
