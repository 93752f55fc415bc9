"""The wallet API (CONTRACT §5) on a real node and a real mint: every route, every error."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support.ecash import EcashFactory
from support.node import MODEL, RunningNode, run_node
from support.node_calls import call

from routstr_node.audit_command import run_audit
from routstr_node.demo.mint import LocalMint
from routstr_node.demo.upstream import RunningUpstream


def assert_error(
    answer: tuple[int, Any], status: int, code: str, *, param: str | None = None
) -> None:
    got_status, body = answer
    assert got_status == status, body
    error = body["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert error["code"] == code, error
    assert error["message"]
    if param is not None:
        assert error["param"] == param, error


async def create(http: aiohttp.ClientSession, node: RunningNode, token: str) -> dict[str, Any]:
    status, body = await call(
        http, "POST", f"{node.url}/v1/wallet/create", body={"cashu_token": token}
    )
    assert status == 201, body
    return dict(body)


async def balance(http: aiohttp.ClientSession, node: RunningNode, key: str) -> dict[str, Any]:
    status, body = await call(http, "GET", f"{node.url}/v1/wallet/balance", key=key)
    assert status == 200, body
    return dict(body)


async def assert_balanced(node: RunningNode) -> None:
    report = await run_audit(node.settings)
    assert report["balanced"], report


async def test_withdrawn_tokens_can_be_found_again(
    node: RunningNode, mint: LocalMint, ecash: EcashFactory, http: aiohttp.ClientSession
) -> None:
    """A client whose answer to a withdraw was lost finds the token afterwards."""
    created = await create(http, node, await ecash.token(500, mint_url=mint.url))
    other = await create(http, node, await ecash.token(100, mint_url=mint.url))
    url = f"{node.url}/v1/wallet/withdraw"
    sent = []
    for amount in (30, 70):
        status, body = await call(
            http, "POST", url, key=created["api_key"], body={"amount": amount}
        )
        assert status == 200, body
        sent.append(body)
    status, listed = await call(
        http, "GET", f"{node.url}/v1/wallet/withdrawals", key=created["admin_key"]
    )
    assert status == 200, listed
    assert [(w["cashu_token"], w["amount"], w["mint"]) for w in listed["withdrawals"]] == [
        (b["cashu_token"], b["amount"], b["mint"]) for b in reversed(sent)
    ]
    assert all(isinstance(w["created_at"], int) for w in listed["withdrawals"])
    status, theirs = await call(
        http, "GET", f"{node.url}/v1/wallet/withdrawals", key=other["api_key"]
    )
    assert (status, theirs) == (200, {"withdrawals": []})
    assert_error(
        await call(http, "GET", f"{node.url}/v1/wallet/withdrawals"), 401, "missing_api_key"
    )
    assert await ecash.redeem(listed["withdrawals"][0]["cashu_token"]) == 70
    await assert_balanced(node)


async def test_create_balance_topup_withdraw(
    node: RunningNode, mint: LocalMint, ecash: EcashFactory, http: aiohttp.ClientSession
) -> None:
    created = await create(http, node, await ecash.token(1000, mint_url=mint.url))
    assert created["api_key"].startswith("sk-")
    assert created["admin_key"].startswith("radmin_")
    assert created["balance"] == 1000
    assert created["balance_msat"] == 1_000_000
    assert created["mint"] == mint.url
    assert created["unit"] == "sat"
    key = created["api_key"]

    assert await balance(http, node, key) == {
        "balance": 1000,
        "balance_msat": 1_000_000,
        "reserved": 0,
        "reserved_msat": 0,
        "currency": "sat",
    }
    legacy = await ecash.token(500, mint_url=mint.url, legacy=True)
    assert legacy.startswith("cashuA")
    status, body = await call(
        http, "POST", f"{node.url}/v1/wallet/topup", key=key, body={"cashu_token": legacy}
    )
    assert (status, body) == (200, {"balance": 1500, "amount_added": 500, "currency": "sat"})

    status, body = await call(
        http, "POST", f"{node.url}/v1/wallet/withdraw", key=key, body={"amount": 300}
    )
    assert status == 200, body
    assert set(body) == {"cashu_token", "amount", "mint"}
    assert (body["amount"], body["mint"]) == (300, mint.url)
    assert EcashFactory.amount(body["cashu_token"]) == 300
    assert await ecash.redeem(body["cashu_token"]) == 300
    assert (await balance(http, node, key))["balance"] == 1200

    # amount omitted: everything the account can spend; an empty body is fine
    status, body = await call(http, "POST", f"{node.url}/v1/wallet/withdraw", key=key, raw=b"")
    assert status == 200, body
    assert body["amount"] == 1200
    assert await ecash.redeem(body["cashu_token"]) == 1200
    assert (await balance(http, node, key))["balance_msat"] == 0
    await assert_balanced(node)


async def test_admin_key_does_everything_and_rotates_the_api_key(
    node: RunningNode, mint: LocalMint, ecash: EcashFactory, http: aiohttp.ClientSession
) -> None:
    created = await create(http, node, await ecash.token(800, mint_url=mint.url))
    api_key, admin_key = created["api_key"], created["admin_key"]
    assert (await balance(http, node, admin_key))["balance"] == 800
    status, body = await call(
        http,
        "POST",
        f"{node.url}/v1/wallet/topup",
        key=admin_key,
        body={"cashu_token": await ecash.token(200, mint_url=mint.url)},
    )
    assert (status, body["balance"]) == (200, 1000)
    status, body = await call(
        http, "POST", f"{node.url}/v1/wallet/withdraw", key=admin_key, body={"amount": 100}
    )
    assert status == 200 and await ecash.redeem(body["cashu_token"]) == 100

    # the api key cannot rotate itself
    assert_error(
        await call(http, "POST", f"{node.url}/v1/wallet/rotate", key=api_key),
        403,
        "admin_key_required",
    )
    assert_error(await call(http, "POST", f"{node.url}/v1/wallet/rotate"), 401, "missing_api_key")
    assert_error(
        await call(http, "POST", f"{node.url}/v1/wallet/rotate", key="radmin_" + "0" * 64),
        401,
        "invalid_api_key",
    )

    status, body = await call(http, "POST", f"{node.url}/v1/wallet/rotate", key=admin_key)
    assert status == 200, body
    new_key = body["api_key"]
    assert new_key.startswith("sk-") and new_key != api_key
    assert_error(
        await call(http, "GET", f"{node.url}/v1/wallet/balance", key=api_key),
        401,
        "invalid_api_key",
    )
    assert (await balance(http, node, new_key))["balance"] == 900
    assert (await balance(http, node, admin_key))["balance"] == 900

    # the old key pays for nothing any more; the new one does
    request = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    status, body = await call(
        http, "POST", f"{node.url}/v1/chat/completions", key=api_key, body=request
    )
    assert_error((status, body), 401, "invalid_api_key")
    status, body = await call(
        http, "POST", f"{node.url}/v1/chat/completions", key=new_key, body=request
    )
    assert status == 200, body

    status, body = await call(http, "POST", f"{node.url}/v1/wallet/rotate", key=admin_key)
    assert_error(
        await call(http, "GET", f"{node.url}/v1/wallet/balance", key=new_key),
        401,
        "invalid_api_key",
    )
    assert (await balance(http, node, body["api_key"]))["balance"] < 900
    await assert_balanced(node)


async def test_create_and_topup_errors(
    node: RunningNode,
    mint: LocalMint,
    fee_mint: LocalMint,
    ecash: EcashFactory,
    http: aiohttp.ClientSession,
) -> None:
    url = f"{node.url}/v1/wallet/create"
    assert_error(await call(http, "POST", url, raw=b"{not json"), 400, "invalid_json")
    assert_error(await call(http, "POST", url, body=["a", "list"]), 400, "invalid_json")
    assert_error(
        await call(http, "POST", url, body={}), 400, "cashu_token_missing", param="cashu_token"
    )
    assert_error(await call(http, "POST", url, body={"cashu_token": 5}), 400, "cashu_token_invalid")
    assert_error(
        await call(http, "POST", url, body={"cashu_token": "cashuBnonsense"}),
        400,
        "cashu_token_invalid",
    )
    untrusted = await ecash.token(100, mint_url=fee_mint.url)
    assert_error(
        await call(http, "POST", url, body={"cashu_token": untrusted}), 400, "cashu_mint_untrusted"
    )
    assert not await ecash.is_spent(untrusted)

    spent = await ecash.token(100, mint_url=mint.url)
    assert await ecash.redeem(spent) == 100
    assert_error(
        await call(http, "POST", url, body={"cashu_token": spent}), 400, "cashu_token_spent"
    )

    # the same token again answers the same keys while they are unused (the first answer
    # may have been lost); once one is used, it is a spent token
    token = await ecash.token(100, mint_url=mint.url)
    first = await create(http, node, token)
    assert await create(http, node, token) == first
    key = first["api_key"]
    status, _ = await call(http, "GET", f"{node.url}/v1/wallet/balance", key=key)
    assert status == 200
    assert_error(
        await call(http, "POST", url, body={"cashu_token": token}), 400, "cashu_token_spent"
    )

    topup = f"{node.url}/v1/wallet/topup"
    fresh = await ecash.token(50, mint_url=mint.url)
    assert_error(
        await call(http, "POST", topup, body={"cashu_token": fresh}), 401, "missing_api_key"
    )
    assert_error(
        await call(http, "POST", topup, key="sk-nope", body={"cashu_token": fresh}),
        401,
        "invalid_api_key",
    )
    assert_error(await call(http, "POST", topup, key=key, body={}), 400, "cashu_token_missing")
    assert_error(await call(http, "POST", topup, key=key, raw=b"[1"), 400, "invalid_json")
    assert_error(
        await call(http, "POST", topup, key=key, body={"cashu_token": token}),
        400,
        "cashu_token_spent",
    )
    assert_error(
        await call(http, "POST", topup, key=key, body={"cashu_token": untrusted}),
        400,
        "cashu_mint_untrusted",
    )
    assert not await ecash.is_spent(fresh)
    assert (await balance(http, node, key))["balance"] == 100

    # a topup retried after its answer was lost: still spent, and told where the money is
    again = await ecash.token(20, mint_url=mint.url)
    status, body = await call(http, "POST", topup, key=key, body={"cashu_token": again})
    assert (status, body["amount_added"]) == (200, 20), body
    retried = await call(http, "POST", topup, key=key, body={"cashu_token": again})
    assert_error(retried, 400, "cashu_token_spent")
    assert "into this account" in retried[1]["error"]["message"]
    assert (await balance(http, node, key))["balance"] == 120
    assert_error(
        await call(http, "POST", url, body={"cashu_token": again}), 400, "cashu_token_spent"
    )

    for path in ("/v1/wallet/balance", "/v1/wallet/withdraw"):
        method = "GET" if path.endswith("balance") else "POST"
        assert_error(await call(http, method, node.url + path), 401, "missing_api_key")
        assert_error(
            await call(http, method, node.url + path, key="sk-" + "1" * 64), 401, "invalid_api_key"
        )
        assert_error(await call(http, method, node.url + path, key="hello"), 401, "invalid_api_key")
    await assert_balanced(node)


async def test_withdraw_errors_leave_the_balance_alone(
    node: RunningNode,
    mint: LocalMint,
    fee_mint: LocalMint,
    ecash: EcashFactory,
    http: aiohttp.ClientSession,
) -> None:
    key = (await create(http, node, await ecash.token(100, mint_url=mint.url)))["api_key"]
    url = f"{node.url}/v1/wallet/withdraw"
    for bad in (0, -5, 1.5, "10", True, [10], {"sat": 1}):
        assert_error(
            await call(http, "POST", url, key=key, body={"amount": bad}),
            400,
            "invalid_amount",
            param="amount",
        )
    assert_error(
        await call(http, "POST", url, key=key, body={"amount": 101}), 402, "insufficient_balance"
    )
    assert_error(
        await call(http, "POST", url, key=key, body={"amount": 10**30}),
        400,
        "invalid_amount",
        param="amount",
    )
    assert_error(
        await call(http, "POST", url, key=key, body={"amount": 10, "mint": fee_mint.url}),
        400,
        "cashu_mint_untrusted",
        param="mint",
    )
    assert_error(
        await call(http, "POST", url, key=key, body={"amount": 10, "mint": 42}),
        400,
        "cashu_mint_untrusted",
        param="mint",
    )
    assert_error(await call(http, "POST", url, key=key, raw=b"nope"), 400, "invalid_json")
    assert (await balance(http, node, key))["balance_msat"] == 100_000

    status, body = await call(http, "POST", url, key=key, body={"amount": 100})
    assert status == 200 and body["amount"] == 100
    # nothing left: both an explicit amount and "all" are refused
    assert_error(await call(http, "POST", url, key=key, body={}), 402, "insufficient_balance")
    assert_error(
        await call(http, "POST", url, key=key, body={"amount": 1}), 402, "insufficient_balance"
    )
    await assert_balanced(node)


async def test_refund_of_a_pay_per_request_token(
    node: RunningNode, mint: LocalMint, ecash: EcashFactory, http: aiohttp.ClientSession
) -> None:
    url = f"{node.url}/v1/wallet/refund"
    assert_error(await call(http, "POST", url), 400, "cashu_token_missing")
    never = await ecash.token(50, mint_url=mint.url)
    assert_error(await call(http, "POST", url, headers={"X-Cashu": never}), 404, "not_found")
    assert_error(
        await call(http, "POST", url, headers={"X-Cashu": "cashuBxx"}), 400, "cashu_token_invalid"
    )

    token = await ecash.token(500, mint_url=mint.url)
    request = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    async with http.post(
        f"{node.url}/v1/chat/completions", json=request, headers={"X-Cashu": token}
    ) as resp:
        assert resp.status == 200, await resp.text()
        change = resp.headers["X-Cashu"]
        cost = int(resp.headers["X-Routstr-Cost-Msats"])
    first = await call(http, "POST", url, headers={"X-Cashu": token})
    second = await call(http, "POST", url, headers={"X-Cashu": token})
    assert first == second
    assert first[0] == 200
    assert first[1]["cashu_token"] == change
    assert first[1]["amount"] == (500_000 - cost) // 1000
    assert await ecash.redeem(change) == first[1]["amount"]
    await assert_balanced(node)


async def test_withdraw_takes_only_what_no_request_holds(
    node: RunningNode,
    mint: LocalMint,
    ecash: EcashFactory,
    upstream: RunningUpstream,
    http: aiohttp.ClientSession,
) -> None:
    key = (await create(http, node, await ecash.token(1000, mint_url=mint.url)))["api_key"]
    upstream.behaviour.delay_s = 1.0
    request = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 20}
    in_flight = asyncio.create_task(
        call(http, "POST", f"{node.url}/v1/chat/completions", key=key, body=request)
    )
    for _ in range(100):
        held = await balance(http, node, key)
        if held["reserved_msat"]:
            break
        await asyncio.sleep(0.02)
    assert held["reserved_msat"] > 0
    assert held["balance_msat"] + held["reserved_msat"] == 1_000_000
    assert held["reserved"] == -(-held["reserved_msat"] // 1000)

    # what the request holds cannot be withdrawn, though the account holds it
    assert_error(
        await call(
            http,
            "POST",
            f"{node.url}/v1/wallet/withdraw",
            key=key,
            body={"amount": held["balance_msat"] // 1000 + 1},
        ),
        402,
        "insufficient_balance",
    )
    status, body = await call(http, "POST", f"{node.url}/v1/wallet/withdraw", key=key, body={})
    assert status == 200, body
    assert body["amount"] == held["balance_msat"] // 1000
    status, answer = await in_flight
    assert status == 200, answer
    cost = answer["usage"]["cost"]["total_msats"]
    after = await balance(http, node, key)
    assert after["reserved_msat"] == 0
    assert after["balance_msat"] == 1_000_000 - body["amount"] * 1000 - cost
    assert await ecash.redeem(body["cashu_token"]) == body["amount"]
    await assert_balanced(node)


async def test_withdraw_from_a_chosen_trusted_mint(
    tmp_path: Path,
    mint: LocalMint,
    fee_mint: LocalMint,
    upstream: RunningUpstream,
    ecash: EcashFactory,
    http: aiohttp.ClientSession,
) -> None:
    async with run_node(tmp_path / "two", [mint.url, fee_mint.url], upstream.url) as node:
        created = await create(http, node, await ecash.token(1000, mint_url=fee_mint.url))
        key = created["api_key"]
        assert created["mint"] == fee_mint.url
        credited = created["balance"]
        assert credited < 1000  # the fee mint kept its input fee

        status, body = await call(
            http,
            "POST",
            f"{node.url}/v1/wallet/withdraw",
            key=key,
            body={"amount": 400, "mint": fee_mint.url + "/"},
        )
        assert status == 200, body
        assert (body["amount"], body["mint"]) == (400, fee_mint.url)
        assert 0 < await ecash.redeem(body["cashu_token"]) <= 400
        left = (await balance(http, node, key))["balance"]
        assert credited - 400 - 2 <= left <= credited - 400

        # the primary holds nothing: "all" comes from the mint that holds the money
        status, body = await call(http, "POST", f"{node.url}/v1/wallet/withdraw", key=key)
        assert status == 200, body
        assert body["mint"] == fee_mint.url
        assert left - 2 <= body["amount"] <= left
        assert (await balance(http, node, key))["balance"] == 0

        # a mint the node trusts but holds too little at
        other = (await create(http, node, await ecash.token(300, mint_url=fee_mint.url)))["api_key"]
        assert_error(
            await call(
                http,
                "POST",
                f"{node.url}/v1/wallet/withdraw",
                key=other,
                body={"amount": 100, "mint": mint.url},
            ),
            409,
            "insufficient_mint_liquidity",
            param="mint",
        )
        assert (await balance(http, node, other))["balance"] == 299

        # an account funded at the primary takes from the primary, the other mint holding plenty
        primary = (await create(http, node, await ecash.token(200, mint_url=mint.url)))["api_key"]
        status, body = await call(
            http, "POST", f"{node.url}/v1/wallet/withdraw", key=primary, body={"amount": 50}
        )
        assert (status, body["mint"]) == (200, mint.url), body
        await assert_balanced(node)


async def test_a_client_gone_before_its_body_is_read_is_no_internal_error(
    node: RunningNode,
    mint: LocalMint,
    ecash: EcashFactory,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    key = (await create(http, node, await ecash.token(100, mint_url=mint.url)))["api_key"]
    host, port = node.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /v1/wallet/withdraw HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {key}\r\nContent-Length: 100\r\n\r\n".encode()
        + b'{"amount": '
    )
    await writer.drain()
    await asyncio.sleep(0.2)  # the handler is waiting for the rest of the body
    writer.close()
    await writer.wait_closed()
    for _ in range(50):  # the node notices the connection is gone
        if "client gone" in caplog.text:
            break
        await asyncio.sleep(0.05)
    assert "client gone" in caplog.text
    assert "internal error" not in caplog.text and "Traceback" not in caplog.text
    assert (await balance(http, node, key))["balance"] == 100
    del reader
