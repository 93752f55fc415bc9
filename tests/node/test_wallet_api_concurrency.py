"""Topups, withdrawals and paid requests at once on one account: nothing lost, audit balanced."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from support.ecash import EcashFactory
from support.node import MODEL, run_node

from routstr_node.audit_command import run_audit
from routstr_node.demo.mint import LocalMint
from routstr_node.demo.upstream import RunningUpstream

UNLIMITED = """
[limits]
requests_per_minute = 100000
requests_per_hour = 100000
requests_per_day = 100000
"""


async def test_concurrent_topup_withdraw_and_spend_on_one_account(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream, ecash: EcashFactory
) -> None:
    upstream.behaviour.delay_s = 0.05
    async with (
        run_node(tmp_path / "node", [mint.url], upstream.url, extra_toml=UNLIMITED) as node,
        aiohttp.ClientSession() as http,
    ):
        async with http.post(
            f"{node.url}/v1/wallet/create",
            json={"cashu_token": await ecash.token(4000, mint_url=mint.url)},
        ) as resp:
            assert resp.status == 201
            key = (await resp.json())["api_key"]
        auth = {"Authorization": f"Bearer {key}"}
        topup_tokens = [
            await ecash.token(100 + i, mint_url=mint.url, legacy=i % 2 == 0) for i in range(6)
        ]

        async def topup(token: str) -> int:
            async with http.post(
                f"{node.url}/v1/wallet/topup", json={"cashu_token": token}, headers=auth
            ) as resp:
                body = await resp.json()
                assert resp.status == 200, body
                return int(body["amount_added"]) * 1000

        async def withdraw(amount: int | None) -> str | None:
            request = {} if amount is None else {"amount": amount}
            async with http.post(
                f"{node.url}/v1/wallet/withdraw", json=request, headers=auth
            ) as resp:
                body = await resp.json()
                if resp.status == 402:
                    assert body["error"]["code"] == "insufficient_balance"
                    return None
                assert resp.status == 200, body
                return str(body["cashu_token"])

        async def spend(words: int) -> int:
            chat = {
                "model": MODEL,
                "messages": [{"role": "user", "content": " ".join(["word"] * words)}],
                "max_tokens": 10,
            }
            async with http.post(
                f"{node.url}/v1/chat/completions", json=chat, headers=auth
            ) as resp:
                if resp.status == 402:
                    return 0
                assert resp.status == 200, await resp.text()
                return int(resp.headers["X-Routstr-Cost-Msats"])

        jobs: list[asyncio.Task[object]] = []
        for i in range(6):
            jobs.append(asyncio.create_task(topup(topup_tokens[i])))
            jobs.append(asyncio.create_task(withdraw(120)))
            jobs.append(asyncio.create_task(spend(5 + i)))
            jobs.append(asyncio.create_task(spend(20)))
        jobs.append(asyncio.create_task(withdraw(None)))
        results = await asyncio.gather(*jobs)

        added = sum(r for r in results[0:24:4] if isinstance(r, int))
        tokens = [r for r in (*results[1:24:4], results[24]) if isinstance(r, str)]
        spent = sum(r for i, r in enumerate(results[:24]) if i % 4 in (2, 3) and isinstance(r, int))
        assert added == sum(100 + i for i in range(6)) * 1000
        assert tokens, "every withdrawal was refused"
        withdrawn = sum(EcashFactory.amount(t) for t in tokens)

        async with http.get(f"{node.url}/v1/wallet/balance", headers=auth) as resp:
            final = await resp.json()
        assert final["reserved_msat"] == 0
        assert final["balance_msat"] == 4_000_000 + added - withdrawn * 1000 - spent

        # what is left comes out whole, and every token is worth what it says
        # (the concurrent "all" may have taken everything: then nothing is left to take)
        rest = await withdraw(None)
        if final["balance_msat"] >= 1000:
            assert rest is not None
            assert EcashFactory.amount(rest) == final["balance_msat"] // 1000
            tokens.append(rest)
        else:
            assert rest is None
        redeemed = 0
        for token in tokens:
            redeemed += await ecash.redeem(token)
        assert redeemed == withdrawn + final["balance_msat"] // 1000
        report = await run_audit(node.settings)
        assert report["balanced"], report
        assert report["pending_operations"] == 0
        assert report["balances_msat"] == final["balance_msat"] % 1000
