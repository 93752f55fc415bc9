"""Routstr's /v1/balance/* routes in Routstr's msat dialect, and refunds that never replay."""

from __future__ import annotations

from typing import Any

import aiohttp
from support.ecash import EcashFactory
from support.node import MODEL, RunningNode
from support.node_calls import call

from routstr_node.audit_command import run_audit
from routstr_node.demo.mint import LocalMint

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 5}


def assert_error(answer: tuple[int, Any], status: int, code: str) -> None:
    assert answer[0] == status, answer
    assert answer[1]["error"]["code"] == code, answer


async def spend(http: aiohttp.ClientSession, node: RunningNode, key: str) -> int:
    async with http.post(
        f"{node.url}/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"}
    ) as resp:
        assert resp.status == 200, await resp.text()
        return int(resp.headers["X-Routstr-Cost-Msats"])


async def info(http: aiohttp.ClientSession, node: RunningNode, key: str) -> dict[str, Any]:
    status, body = await call(http, "GET", f"{node.url}/v1/balance/info", key=key)
    assert status == 200, body
    return dict(body)


async def test_create_info_topup_in_msat(
    node: RunningNode, mint: LocalMint, ecash: EcashFactory, http: aiohttp.ClientSession
) -> None:
    status, body = await call(
        http,
        "POST",
        f"{node.url}/v1/balance/create",
        body={"initial_balance_token": await ecash.token(300, mint_url=mint.url)},
    )
    assert status == 200, body
    assert set(body) == {"api_key", "balance"}
    assert body["api_key"].startswith("sk-") and body["balance"] == 300_000
    key = body["api_key"]

    status, body = await call(
        http,
        "GET",
        f"{node.url}/v1/balance/create",
        params={"initial_balance_token": await ecash.token(20, mint_url=mint.url)},
    )
    assert (status, body["balance"]) == (200, 20_000)
    status, body = await call(
        http,
        "POST",
        f"{node.url}/v1/balance/create",
        body={"cashu_token": await ecash.token(10, mint_url=mint.url, legacy=True)},
    )
    assert (status, body["balance"]) == (200, 10_000)

    assert await info(http, node, key) == {"api_key": key, "balance": 300_000, "reserved": 0}

    status, body = await call(
        http,
        "POST",
        f"{node.url}/v1/balance/topup",
        key=key,
        body={"cashu_token": await ecash.token(40, mint_url=mint.url)},
    )
    assert (status, body) == (200, {"msats": 40_000})
    status, body = await call(
        http,
        "POST",
        f"{node.url}/v1/balance/topup",
        key=key,
        params={"cashu_token": await ecash.token(2, mint_url=mint.url, legacy=True)},
    )
    assert (status, body) == (200, {"msats": 2_000})
    cost = await spend(http, node, key)
    assert (await info(http, node, key))["balance"] == 342_000 - cost

    # the sk- account's keys from /v1/wallet work here and the other way round
    status, body = await call(http, "GET", f"{node.url}/v1/wallet/balance", key=key)
    assert body["balance_msat"] == 342_000 - cost

    assert_error(await call(http, "GET", f"{node.url}/v1/balance/info"), 401, "missing_api_key")
    assert_error(
        await call(http, "GET", f"{node.url}/v1/balance/info", key="sk-bad"), 401, "invalid_api_key"
    )
    assert_error(
        await call(http, "POST", f"{node.url}/v1/balance/create", body={}),
        400,
        "cashu_token_missing",
    )
    assert_error(
        await call(http, "GET", f"{node.url}/v1/balance/create"), 400, "cashu_token_missing"
    )
    assert_error(
        await call(http, "POST", f"{node.url}/v1/balance/topup", key=key, body={}),
        400,
        "cashu_token_missing",
    )
    assert_error(
        await call(http, "POST", f"{node.url}/v1/balance/topup", body={"cashu_token": "x"}),
        401,
        "missing_api_key",
    )
    assert_error(await call(http, "POST", f"{node.url}/v1/balance/refund"), 401, "missing_api_key")
    # a token used as the key is not redeemed for a topup whose own token is refused
    as_key = await ecash.token(41, mint_url=mint.url)
    assert_error(
        await call(
            http, "POST", f"{node.url}/v1/balance/topup", key=as_key, body={"cashu_token": "junk"}
        ),
        400,
        "cashu_token_invalid",
    )
    assert not await ecash.is_spent(as_key)
    never = await ecash.token(5, mint_url=mint.url)
    assert_error(
        await call(http, "POST", f"{node.url}/v1/balance/refund", headers={"X-Cashu": never}),
        404,
        "not_found",
    )
    assert (await run_audit(node.settings))["balanced"]


async def test_refund_is_never_replayed_after_money_went_back_in(
    node: RunningNode, mint: LocalMint, ecash: EcashFactory, http: aiohttp.ClientSession
) -> None:
    """Routstr's known failure: refund → topup → spend → the cached refund handed out again."""
    refund_url = f"{node.url}/v1/balance/refund"
    status, body = await call(
        http,
        "POST",
        f"{node.url}/v1/balance/create",
        body={"initial_balance_token": await ecash.token(500, mint_url=mint.url)},
    )
    key = body["api_key"]

    status, first = await call(http, "POST", refund_url, key=key)
    assert status == 200, first
    assert first["sats"] == "500"
    # a retry while nothing happened (a lost answer): the same token, no second payout
    assert await call(http, "POST", refund_url, key=key) == (200, first)
    assert (await info(http, node, key))["balance"] == 0

    # money goes back in, is spent, and the refund pays out what is there now
    status, _ = await call(
        http,
        "POST",
        f"{node.url}/v1/balance/topup",
        key=key,
        body={"cashu_token": await ecash.token(300, mint_url=mint.url)},
    )
    assert status == 200
    cost = await spend(http, node, key)
    status, second = await call(http, "POST", refund_url, key=key)
    assert status == 200, second
    assert second["token"] != first["token"]
    assert second["sats"] == str((300_000 - cost) // 1000)
    assert await ecash.redeem(second["token"]) == int(second["sats"])
    # redeemed: the retry has nothing to hand out, and never the older token
    assert_error(await call(http, "POST", refund_url, key=key), 402, "insufficient_balance")

    # the first refund token itself goes back in: a later refund is a new token
    status, body = await call(
        http, "POST", f"{node.url}/v1/balance/topup", key=key, body={"cashu_token": first["token"]}
    )
    assert (status, body) == (200, {"msats": 500_000})
    status, third = await call(http, "POST", refund_url, key=key)
    assert status == 200 and third["token"] not in (first["token"], second["token"])
    assert third["sats"] == "500"
    assert await ecash.is_spent(first["token"])
    assert await ecash.redeem(third["token"]) == 500

    # a topup between the refund and its retry: the retry pays the new money, not the old
    status, _ = await call(
        http,
        "POST",
        f"{node.url}/v1/balance/topup",
        key=key,
        body={"cashu_token": await ecash.token(70, mint_url=mint.url)},
    )
    status, fourth = await call(http, "POST", refund_url, key=key)
    assert (status, fourth["sats"]) == (200, "70")
    assert fourth["token"] != third["token"]
    assert await ecash.redeem(fourth["token"]) == 70
    assert (await run_audit(node.settings))["balanced"]


async def test_a_token_as_the_key_and_x_cashu_change(
    node: RunningNode, mint: LocalMint, ecash: EcashFactory, http: aiohttp.ClientSession
) -> None:
    token = await ecash.token(400, mint_url=mint.url, legacy=True)
    # Routstr clients use the token itself as the key; info redeems it once
    assert await info(http, node, token) == {"api_key": token, "balance": 400_000, "reserved": 0}
    assert await info(http, node, token) == {"api_key": token, "balance": 400_000, "reserved": 0}
    cost = await spend(http, node, token)
    status, body = await call(http, "POST", f"{node.url}/v1/balance/refund", key=token)
    assert status == 200, body
    assert body["token"].startswith("cashuA")  # as the client paid
    assert body["sats"] == str((400_000 - cost) // 1000)
    assert await ecash.redeem(body["token"]) == int(body["sats"])

    unseen = await ecash.token(30, mint_url=mint.url)
    assert_error(
        await call(http, "POST", f"{node.url}/v1/balance/refund", key=unseen),
        401,
        "invalid_api_key",
    )
    assert not await ecash.is_spent(unseen)

    # pay per request: the refund route hands out the change, the same as /v1/wallet/refund
    paid = await ecash.token(200, mint_url=mint.url)
    async with http.post(
        f"{node.url}/v1/chat/completions", json=CHAT, headers={"X-Cashu": paid}
    ) as resp:
        assert resp.status == 200
        change = resp.headers["X-Cashu"]
    status, body = await call(
        http, "POST", f"{node.url}/v1/balance/refund", headers={"X-Cashu": paid}
    )
    assert status == 200 and body["token"] == change
    status, wallet_body = await call(
        http, "POST", f"{node.url}/v1/wallet/refund", headers={"X-Cashu": paid}
    )
    assert wallet_body == {"cashu_token": change, "amount": int(body["sats"])}
    # a token that paid per request is not an account key
    assert_error(
        await call(http, "GET", f"{node.url}/v1/balance/info", key=paid), 401, "invalid_api_key"
    )
    assert (await run_audit(node.settings))["balanced"]
