"""Automatic payouts to a Lightning address (CONTRACT §13): a local LNURL-pay service
(LUD-06/16) the test runs hands out real bolt11 invoices that the mint's FakeWallet
pays. The node pays its earnings there on its own, once; an invoice for another amount
than the one asked is refused before anything is paid."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from support.e2e import assert_balanced, assert_error, chat_body, get, post, until
from support.ecash import EcashFactory
from support.invoices import fake_invoice
from support.node import RunningNode, run_node
from support.wallets import query

from routstr_node.demo.mint import LocalMint
from routstr_node.demo.upstream import RunningUpstream

PASSWORD = "payout admin password"
ADMIN = {"Cookie": f"admin_password={PASSWORD}"}


@dataclass
class LnurlService:
    """An LNURL-pay service: what it was asked for, and how far off its invoices are."""

    url: str = ""
    asked_msat: list[int] = field(default_factory=list)
    off_by_sat: int = 0

    @property
    def address(self) -> str:
        return f"{self.url}/.well-known/lnurlp/operator"


@asynccontextmanager
async def lnurl_service() -> AsyncIterator[LnurlService]:
    service = LnurlService()

    async def pay_request(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "tag": "payRequest",
                "callback": f"{service.url}/lnurlp/operator/callback",
                "minSendable": 1000,
                "maxSendable": 100_000_000,
                "metadata": '[["text/plain", "earnings of a routstr node"]]',
            }
        )

    async def callback(request: web.Request) -> web.Response:
        amount_msat = int(request.query["amount"])
        service.asked_msat.append(amount_msat)
        invoice = fake_invoice(amount_msat // 1000 + service.off_by_sat)
        return web.json_response({"pr": invoice, "routes": []})

    app = web.Application()
    app.router.add_get("/.well-known/lnurlp/operator", pay_request)
    app.router.add_get("/lnurlp/operator/callback", callback)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    service.url = f"http://127.0.0.1:{port}"
    try:
        yield service
    finally:
        await runner.cleanup()


def _toml(service: LnurlService | None, min_sat: int = 10) -> str:
    extra = f'[admin]\npassword = "{PASSWORD}"\n[limits]\nrequests_per_minute = 6000\n'
    if service is not None:
        extra += (
            f'[payout]\nlightning_address = "{service.address}"\n'
            f"min_sat = {min_sat}\ninterval_minutes = 60\n"
        )
    return extra


async def _earn(node: RunningNode, ecash: EcashFactory, mint: LocalMint) -> None:
    created = await post(
        f"{node.url}/v1/wallet/create", {"cashu_token": await ecash.token(2000, mint_url=mint.url)}
    )
    assert created.status == 201, created.raw
    auth = {"Authorization": f"Bearer {created.body['api_key']}"}
    for i in range(5):
        answer = await post(
            f"{node.url}/v1/chat/completions", chat_body(f"earn {i}", max_tokens=30), auth
        )
        assert answer.status == 200, answer.raw


async def _books(node: RunningNode) -> dict[str, Any]:
    answer = await get(f"{node.url}/admin/api/balances", ADMIN)
    assert answer.status == 200, answer.raw
    body: dict[str, Any] = answer.body
    return body


async def _payouts(node: RunningNode) -> list[dict[str, Any]]:
    answer = await get(f"{node.url}/admin/api/payouts", ADMIN)
    payouts: list[dict[str, Any]] = answer.body["payouts"]
    return payouts


async def test_earnings_are_paid_to_the_lightning_address_once_also_across_restarts(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream, ecash: EcashFactory
) -> None:
    async with run_node(tmp_path, [mint.url], upstream.url, extra_toml=_toml(None)) as node:
        await _earn(node, ecash, mint)
        before = await _books(node)
    earnings = before["totals"]["earnings_msat"]
    assert earnings > 20_000

    async with (
        lnurl_service() as service,
        run_node(tmp_path, [mint.url], upstream.url, extra_toml=_toml(service)) as node,
    ):

        async def paid() -> dict[str, Any] | None:
            done = [p for p in await _payouts(node) if p["state"] == "paid"]
            return done[0] if done else None

        payout = await until(paid)  # the node's own first round, without being asked
        assert payout["kind"] == "lightning_address"
        assert payout["destination"] == service.address
        assert service.asked_msat == [payout["amount"] * 1000]
        after = await _books(node)
        spent = (payout["amount"] + payout["fee"]) * 1000
        assert after["totals"]["earnings_msat"] == earnings - spent
        assert after["totals"]["liabilities_msat"] == before["totals"]["liabilities_msat"]
        again = await post(f"{node.url}/admin/api/payouts/run", {}, ADMIN)
        assert again.status == 200 and again.body["paid"] is False, again.raw
        await assert_balanced(node)

    async with (
        lnurl_service() as service,
        run_node(tmp_path, [mint.url], upstream.url, extra_toml=_toml(service)) as node,
    ):
        # the earnings already paid are not paid again after a restart
        again = await post(f"{node.url}/admin/api/payouts/run", {}, ADMIN)
        assert again.status == 200 and again.body["paid"] is False, again.raw
        assert service.asked_msat == []
        assert len(await _payouts(node)) == 1
        await assert_balanced(node)


async def test_an_invoice_for_another_amount_is_refused_and_nothing_is_paid(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream, ecash: EcashFactory
) -> None:
    async with lnurl_service() as service:
        service.off_by_sat = 1
        toml = _toml(service, min_sat=100_000)  # the node's own rounds pay nothing
        async with run_node(tmp_path, [mint.url], upstream.url, extra_toml=toml) as node:
            await _earn(node, ecash, mint)
            below = await post(f"{node.url}/admin/api/payouts/run", {}, ADMIN)
            assert below.status == 200 and below.body["paid"] is False
            assert service.asked_msat == []

            patch = {"payout": {"min_sat": 10}}
            async with (
                aiohttp.ClientSession() as http,
                http.patch(f"{node.url}/admin/api/settings", json=patch, headers=ADMIN) as resp,
            ):
                assert resp.status == 200, await resp.text()
            before = await _books(node)
            refused = await post(f"{node.url}/admin/api/payouts/run", {}, ADMIN)
            assert_error(refused, 400, "invoice_amount_mismatch")
            assert len(service.asked_msat) == 1
            assert await _payouts(node) == []
            assert query(node.data_dir, "SELECT COUNT(*) FROM operations WHERE kind = 'melt'") == [
                (0,)
            ]
            after = await _books(node)
            assert after["totals"] == before["totals"]

            service.off_by_sat = 0  # the service mends its ways: the next round pays
            paid = await post(f"{node.url}/admin/api/payouts/run", {}, ADMIN)
            assert paid.status == 200 and paid.body["paid"] is True, paid.raw
            assert paid.body["amount"] * 1000 == service.asked_msat[-1]
            await assert_balanced(node)
