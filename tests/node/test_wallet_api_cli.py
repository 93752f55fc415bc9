"""A real user wallet (nutshell's ``cashu`` CLI) on both sides of the wallet API."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from support.cashu_cli import CashuCli
from support.ecash import EcashFactory
from support.node import RunningNode

from routstr_node.audit_command import run_audit
from routstr_node.demo.mint import LocalMint


async def test_cli_tokens_fund_an_account_and_the_cli_receives_withdrawals(
    node: RunningNode, mint: LocalMint, ecash: EcashFactory, tmp_path: Path
) -> None:
    cli = CashuCli(mint.url, tmp_path / "user-wallet")
    await cli.fund(1000)
    token_b = await cli.send(300)
    token_a = await cli.send(200, legacy=True)
    other_a = await cli.send(60, legacy=True)
    other_b = await cli.send(40)
    assert token_b.startswith("cashuB") and token_a.startswith("cashuA")
    assert other_a.startswith("cashuA") and other_b.startswith("cashuB")

    async with aiohttp.ClientSession() as http:
        async with http.post(f"{node.url}/v1/wallet/create", json={"cashu_token": token_b}) as resp:
            created = await resp.json()
            assert resp.status == 201, created
        assert created["balance"] == 300
        auth = {"Authorization": f"Bearer {created['api_key']}"}
        async with http.post(
            f"{node.url}/v1/wallet/topup", json={"cashu_token": token_a}, headers=auth
        ) as resp:
            topped = await resp.json()
            assert resp.status == 200, topped
        assert (topped["amount_added"], topped["balance"]) == (200, 500)

        # the other way round: cashuA creates, cashuB tops up
        async with http.post(f"{node.url}/v1/wallet/create", json={"cashu_token": other_a}) as resp:
            second = await resp.json()
            assert (resp.status, second["balance"]) == (201, 60), second
        async with http.post(
            f"{node.url}/v1/wallet/topup",
            json={"cashu_token": other_b},
            headers={"Authorization": f"Bearer {second['api_key']}"},
        ) as resp:
            assert (resp.status, (await resp.json())["balance"]) == (200, 100)

        # and a token from nutshell's library wallet, withdrawn for the user's CLI wallet
        async with http.post(
            f"{node.url}/v1/wallet/topup",
            json={"cashu_token": await ecash.token(100, mint_url=mint.url)},
            headers=auth,
        ) as resp:
            assert resp.status == 200
        async with http.post(
            f"{node.url}/v1/wallet/withdraw", json={"amount": 450}, headers=auth
        ) as resp:
            withdrawn = await resp.json()
            assert resp.status == 200, withdrawn
        async with http.post(f"{node.url}/v1/wallet/withdraw", headers=auth) as resp:
            rest = await resp.json()
            assert resp.status == 200, rest
        assert rest["amount"] == 150

    # the user's wallet takes both tokens for their full value
    assert await cli.receive(withdrawn["cashu_token"]) == 400 + 450
    assert await cli.receive(rest["cashu_token"]) == 400 + 450 + 150
    assert await ecash.is_spent(withdrawn["cashu_token"])
    report = await run_audit(node.settings)
    assert report["balanced"] and report["balances_msat"] == 100_000, report
