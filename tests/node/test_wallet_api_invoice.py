"""Lightning in and out through the wallet API, on FakeWallet mints.

Invoices the node pays are foreign ones (FakeWallet pays any well-formed invoice); a
mint whose Lightning payments fail and one that never sees its invoices paid show the
failure paths.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from support.ecash import EcashFactory
from support.invoices import fake_invoice
from support.node import RunningNode, run_node
from support.node_calls import call

import routstr_node.demo.mint as demo_mint
from routstr_node.audit_command import run_audit
from routstr_node.demo.mint import LocalMint
from routstr_node.demo.upstream import RunningUpstream

SECRET = "X-Invoice-Secret"


def assert_error(answer: tuple[int, Any], status: int, code: str, param: str | None = None) -> None:
    assert answer[0] == status, answer
    assert answer[1]["error"]["code"] == code, answer
    if param is not None:
        assert answer[1]["error"]["param"] == param


async def funded_key(
    http: aiohttp.ClientSession, node: RunningNode, ecash: EcashFactory, mint_url: str, sat: int
) -> str:
    status, body = await call(
        http,
        "POST",
        f"{node.url}/v1/wallet/create",
        body={"cashu_token": await ecash.token(sat, mint_url=mint_url)},
    )
    assert status == 201, body
    return str(body["api_key"])


async def balance_msat(http: aiohttp.ClientSession, node: RunningNode, key: str) -> int:
    status, body = await call(http, "GET", f"{node.url}/v1/wallet/balance", key=key)
    assert status == 200, body
    return int(body["balance_msat"])


@asynccontextmanager
async def odd_mint(directory: Path, **settings: str) -> AsyncIterator[LocalMint]:
    """A FakeWallet mint with some of its FAKEWALLET_* knobs turned."""
    async with demo_mint.run_local_mint(directory, settings=settings) as running:
        yield running


async def test_lightning_in_creates_an_account_for_the_secret_holder_only(
    node: RunningNode, mint: LocalMint, ecash: EcashFactory, http: aiohttp.ClientSession
) -> None:
    status, created = await call(
        http, "POST", f"{node.url}/v1/wallet/invoice", body={"amount": 1000}
    )
    assert status == 201, created
    assert created["bolt11"].startswith("ln")
    assert created["invoice_id"].startswith("inv_") and created["secret"].startswith("invsec_")
    assert (created["amount"], created["mode"], created["state"]) == (1000, "create", "unpaid")
    assert created["mint"] == mint.url
    url = f"{node.url}/v1/wallet/invoice/{created['invoice_id']}"

    # FakeWallet pays at once; whoever asks with only the id sees the state, no keys
    status, seen = await call(http, "GET", url)
    assert status == 200, seen
    assert seen["state"] == "paid" and seen["amount_added"] == 1000
    assert seen["keys_delivered"] is False
    assert "api_key" not in seen and "admin_key" not in seen and "secret" not in seen

    assert_error(
        await call(http, "GET", url, headers={SECRET: "invsec_" + "0" * 64}),
        401,
        "invalid_invoice_secret",
    )
    status, claimed = await call(http, "GET", url, headers={SECRET: created["secret"]})
    assert status == 200, claimed
    assert claimed["api_key"].startswith("sk-") and claimed["admin_key"].startswith("radmin_")
    assert (claimed["balance"], claimed["balance_msat"]) == (1000, 1_000_000)
    assert claimed["keys_delivered"] is True

    # asked again (the answer may have been lost): new keys while the account is untouched,
    # and the first ones stop working
    status, again = await call(http, "GET", url, headers={SECRET: created["secret"]})
    assert status == 200 and again["keys_delivered"] is True
    assert again["api_key"] != claimed["api_key"] and again["balance_msat"] == 1_000_000
    status, _ = await call(http, "GET", f"{node.url}/v1/wallet/balance", key=claimed["api_key"])
    assert status == 401
    claimed = again

    key = claimed["api_key"]
    assert await balance_msat(http, node, key) == 1_000_000
    assert await balance_msat(http, node, claimed["admin_key"]) == 1_000_000
    status, body = await call(
        http, "POST", f"{node.url}/v1/wallet/withdraw", key=key, body={"amount": 250}
    )
    assert status == 200 and await ecash.redeem(body["cashu_token"]) == 250
    # once the account was used, the secret shows the state only
    status, late = await call(http, "GET", url, headers={SECRET: created["secret"]})
    assert status == 200 and late["keys_delivered"] is True
    assert "api_key" not in late
    assert await balance_msat(http, node, key) == 750_000
    assert (await run_audit(node.settings))["balanced"]


async def test_lightning_in_tops_up_the_account_that_asked(
    node: RunningNode, mint: LocalMint, ecash: EcashFactory, http: aiohttp.ClientSession
) -> None:
    key = await funded_key(http, node, ecash, mint.url, 100)
    status, created = await call(
        http, "POST", f"{node.url}/v1/wallet/invoice", key=key, body={"amount": 400}
    )
    assert status == 201, created
    assert created["mode"] == "topup"
    url = f"{node.url}/v1/wallet/invoice/{created['invoice_id']}"
    status, seen = await call(http, "GET", url)
    assert (status, seen["state"], seen["amount_added"]) == (200, "paid", 400)
    assert "keys_delivered" not in seen
    # the secret of a top-up opens nothing, a wrong one is refused
    status, body = await call(http, "GET", url, headers={SECRET: created["secret"]})
    assert status == 200 and "api_key" not in body
    assert_error(await call(http, "GET", url, headers={SECRET: "x"}), 401, "invalid_invoice_secret")
    assert await balance_msat(http, node, key) == 500_000
    # asking again never credits twice
    await call(http, "GET", url)
    assert await balance_msat(http, node, key) == 500_000

    # nobody asks: the node's poller mints it anyway
    status, created = await call(
        http, "POST", f"{node.url}/v1/wallet/invoice", key=key, body={"amount": 21}
    )
    assert status == 201
    for _ in range(100):
        if await balance_msat(http, node, key) == 521_000:
            break
        await asyncio.sleep(0.1)
    assert await balance_msat(http, node, key) == 521_000
    assert (await run_audit(node.settings))["balanced"]


async def test_invoice_errors(
    node: RunningNode, mint: LocalMint, http: aiohttp.ClientSession
) -> None:
    url = f"{node.url}/v1/wallet/invoice"
    for body in (
        {},
        {"amount": 0},
        {"amount": -1},
        {"amount": 2.5},
        {"amount": "5"},
        {"amount": None},
    ):
        assert_error(await call(http, "POST", url, body=body), 400, "invalid_amount", "amount")
    assert_error(
        await call(http, "POST", url, body={"amount": 10**20}), 400, "invalid_amount", "amount"
    )
    async with http.post(url, data=b"{oops") as resp:
        assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_json"
    assert_error(
        await call(http, "POST", url, key="sk-nope", body={"amount": 5}), 401, "invalid_api_key"
    )
    assert_error(await call(http, "GET", f"{url}/inv_doesnotexist"), 404, "not_found")


async def test_withdraw_to_an_invoice(
    node: RunningNode, mint: LocalMint, ecash: EcashFactory, http: aiohttp.ClientSession
) -> None:
    key = await funded_key(http, node, ecash, mint.url, 1000)
    url = f"{node.url}/v1/wallet/withdraw"
    status, paid = await call(http, "POST", url, key=key, body={"invoice": fake_invoice(300)})
    assert status == 200, paid
    assert paid["paid"] is True and paid["amount"] == 300
    assert 0 <= paid["fee"] <= 10
    assert await balance_msat(http, node, key) == (1000 - 300 - paid["fee"]) * 1000

    # the fee reserve is checked before anything moves
    left = (1000 - 300 - paid["fee"]) * 1000
    assert_error(
        await call(http, "POST", url, key=key, body={"invoice": fake_invoice(left // 1000)}),
        402,
        "insufficient_balance",
    )
    assert await balance_msat(http, node, key) == left

    assert_error(
        await call(http, "POST", url, key=key, body={"invoice": "lnbcrt1garbage"}),
        400,
        "invalid_invoice",
        "invoice",
    )
    assert_error(
        await call(http, "POST", url, key=key, body={"invoice": 12}),
        400,
        "invalid_invoice",
        "invoice",
    )
    assert_error(
        await call(http, "POST", url, key=key, body={"invoice": fake_invoice(5), "amount": 5}),
        400,
        "invalid_amount",
        "amount",
    )
    assert_error(
        await call(http, "POST", url, body={"invoice": fake_invoice(5)}), 401, "missing_api_key"
    )
    assert await balance_msat(http, node, key) == left
    assert (await run_audit(node.settings))["balanced"]


async def test_a_failed_payment_returns_the_money(
    tmp_path: Path, upstream: RunningUpstream, ecash: EcashFactory, http: aiohttp.ClientSession
) -> None:
    async with (
        odd_mint(
            tmp_path / "failing",
            FAKEWALLET_PAY_INVOICE_STATE="FAILED",
            FAKEWALLET_PAYMENT_STATE="FAILED",
        ) as failing,
        run_node(tmp_path / "node", [failing.url], upstream.url) as node,
    ):
        key = await funded_key(http, node, ecash, failing.url, 500)
        assert_error(
            await call(
                http,
                "POST",
                f"{node.url}/v1/wallet/withdraw",
                key=key,
                body={"invoice": fake_invoice(200)},
            ),
            502,
            "payment_failed",
        )
        assert await balance_msat(http, node, key) == 500_000
        _, body = await call(http, "GET", f"{node.url}/v1/wallet/balance", key=key)
        assert body["reserved_msat"] == 0
        report = await run_audit(node.settings)
        assert report["balanced"] and report["pending_operations"] == 0, report


async def test_a_pending_payment_is_held_then_settled_at_start(
    tmp_path: Path, upstream: RunningUpstream, ecash: EcashFactory, http: aiohttp.ClientSession
) -> None:
    """The mint cannot say yet: the amount and fee reserve stay held until it can."""
    async with odd_mint(tmp_path / "slow", FAKEWALLET_PAY_INVOICE_STATE="FAILED") as slow:
        async with run_node(tmp_path / "node", [slow.url], upstream.url) as node:
            key = await funded_key(http, node, ecash, slow.url, 500)
            status, body = await call(
                http,
                "POST",
                f"{node.url}/v1/wallet/withdraw",
                key=key,
                body={"invoice": fake_invoice(200)},
            )
            assert (status, body) == (202, {"paid": False, "pending": True, "amount": 200})
            _, held = await call(http, "GET", f"{node.url}/v1/wallet/balance", key=key)
            assert held["reserved_msat"] >= 200_000
            assert held["balance_msat"] + held["reserved_msat"] == 500_000
        # the mint has settled it meanwhile; the node finishes the payment once it starts
        # (beside serving: a start never waits for a mint)
        async with run_node(tmp_path / "node", [slow.url], upstream.url) as node:
            async with asyncio.timeout(20):
                while True:
                    _, after = await call(http, "GET", f"{node.url}/v1/wallet/balance", key=key)
                    if after["reserved_msat"] == 0:
                        break
                    await asyncio.sleep(0.05)
            assert 297_000 <= after["balance_msat"] <= 300_000
            report = await run_audit(node.settings)
            assert report["balanced"] and report["pending_operations"] == 0, report


async def test_an_unpaid_invoice_stays_unpaid(
    tmp_path: Path, upstream: RunningUpstream, http: aiohttp.ClientSession
) -> None:
    async with (
        odd_mint(tmp_path / "unpaid", FAKEWALLET_BRR="FALSE") as lazy,
        run_node(tmp_path / "node", [lazy.url], upstream.url) as node,
    ):
        status, created = await call(
            http, "POST", f"{node.url}/v1/wallet/invoice", body={"amount": 50}
        )
        assert status == 201, created
        url = f"{node.url}/v1/wallet/invoice/{created['invoice_id']}"
        status, seen = await call(http, "GET", url, headers={SECRET: created["secret"]})
        assert (status, seen["state"], seen["keys_delivered"]) == (200, "unpaid", False)
        assert "api_key" not in seen and "amount_added" not in seen
        report = await run_audit(node.settings)
        assert report["balanced"] and report["balances_msat"] == 0
