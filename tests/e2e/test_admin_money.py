"""Money held at a mint the operator stops trusting in the admin panel is not frozen:
balances are withdrawn, refunds and change are paid from that mint's ecash, and the
books still balance. New tokens of that mint are refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
from support.e2e import assert_balanced, assert_error, chat_body, parse_sse, post
from support.ecash import EcashFactory
from support.node import RunningNode, run_node

from routstr_node.demo.mint import LocalMint
from routstr_node.demo.upstream import RunningUpstream

PASSWORD = "admin password for money tests"


@asynccontextmanager
async def node_and_admin(
    directory: Path, mint_urls: list[str], upstream: RunningUpstream
) -> AsyncIterator[tuple[RunningNode, aiohttp.ClientSession]]:
    """A node with an admin password, and a session signed in to its admin API."""
    extra = f'[admin]\npassword = "{PASSWORD}"\n'
    async with (
        run_node(directory, mint_urls, upstream.url, extra_toml=extra) as node,
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as admin,
    ):
        login = await admin.post(f"{node.url}/admin/login", json={"password": PASSWORD})
        assert login.status == 200
        yield node, admin


async def _distrust(session: aiohttp.ClientSession, url: str, keep: str) -> None:
    patch = await session.patch(f"{url}/admin/api/settings", json={"mints": {"trusted": [keep]}})
    assert patch.status == 200, await patch.text()


async def test_balances_at_a_distrusted_mint_are_still_withdrawn(
    tmp_path: Path,
    mint: LocalMint,
    fee_mint: LocalMint,
    upstream: RunningUpstream,
    ecash: EcashFactory,
) -> None:
    async with node_and_admin(tmp_path, [mint.url, fee_mint.url], upstream) as (node, admin):
        paid_in = await ecash.token(600, mint_url=fee_mint.url)
        created = await post(f"{node.url}/v1/wallet/create", {"cashu_token": paid_in})
        assert created.status == 201, created.raw
        key = {"Authorization": f"Bearer {created.body['api_key']}"}
        await _distrust(admin, node.url, keep=mint.url)

        refused = await post(
            f"{node.url}/v1/wallet/create",
            {"cashu_token": await ecash.token(100, mint_url=fee_mint.url)},
        )
        assert_error(refused, 400, "cashu_mint_untrusted")
        elsewhere = await post(
            f"{node.url}/v1/wallet/withdraw", {"amount": 10, "mint": "http://127.0.0.1:9"}, key
        )
        assert_error(elsewhere, 400, "cashu_mint_untrusted")  # never a call to a named URL

        some = await post(
            f"{node.url}/v1/wallet/withdraw", {"amount": 100, "mint": fee_mint.url}, key
        )
        assert some.status == 200, some.raw
        assert some.body["mint"] == fee_mint.url
        assert some.body["amount"] == 100
        assert await ecash.redeem(some.body["cashu_token"]) > 0  # less its input fee
        rest = await post(f"{node.url}/v1/wallet/withdraw", {}, key)
        assert rest.status == 200, rest.raw
        assert rest.body["mint"] == fee_mint.url  # all the node holds is there
        assert await ecash.redeem(rest.body["cashu_token"]) > 0
        await assert_balanced(node)


async def test_change_of_a_running_request_comes_from_the_distrusted_mint(
    tmp_path: Path,
    mint: LocalMint,
    fee_mint: LocalMint,
    upstream: RunningUpstream,
    ecash: EcashFactory,
) -> None:
    upstream.behaviour.chunk_delay_s = 0.05
    upstream.behaviour.reply_words = 20
    async with node_and_admin(tmp_path, [mint.url, fee_mint.url], upstream) as (node, admin):
        token = await ecash.token(500, mint_url=fee_mint.url)
        body = chat_body("hello", max_tokens=20, stream=True)
        headers = {"X-Cashu": token, "Content-Type": "application/json"}
        async with aiohttp.ClientSession() as client:
            resp = await client.post(f"{node.url}/v1/chat/completions", data=body, headers=headers)
            assert resp.status == 200
            first = await resp.content.readuntil(b"\n\n")  # the stream is running
            await _distrust(admin, node.url, keep=mint.url)
            events = parse_sse(first + await resp.read())
        data = [e.json for e in events if e.data != "[DONE]"]
        final = data[-1]
        assert final["choices"] == [] and "usage" in final
        change = final["cashu_change"]
        assert change, final
        assert await ecash.redeem(change) > 0  # fee_mint ecash, less its input fee
        again = await post(f"{node.url}/v1/wallet/refund", b"", {"X-Cashu": token})
        assert again.status == 200, again.raw  # the same change, claimable again
        assert again.body["cashu_token"] == change
        await assert_balanced(node)


async def test_a_stream_outlives_many_changes_of_its_upstream(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream, ecash: EcashFactory
) -> None:
    """Each change gives the upstream a new session; the stream's old one stays open."""
    upstream.behaviour.chunk_delay_s = 0.05
    upstream.behaviour.reply_words = 20
    async with (
        node_and_admin(tmp_path, [mint.url], upstream) as (node, admin),
        # bounded: a stream cut under the node must fail the test, not hang it
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as client,
    ):
        token = await ecash.token(500, mint_url=mint.url)
        body = chat_body("hello", max_tokens=20, stream=True)
        headers = {"X-Cashu": token, "Content-Type": "application/json"}
        resp = await client.post(f"{node.url}/v1/chat/completions", data=body, headers=headers)
        assert resp.status == 200
        first = await resp.content.readuntil(b"\n\n")
        settings = await (await admin.get(f"{node.url}/admin/api/settings")).json()
        for timeout_s in range(10, 22):
            changed = [{**settings["upstreams"][0], "timeout_s": timeout_s}]
            patch = await admin.patch(f"{node.url}/admin/api/settings", json={"upstreams": changed})
            assert patch.status == 200, await patch.text()
        events = parse_sse(first + await resp.read())
        final = [e.json for e in events if e.data != "[DONE]"][-1]
        assert final["choices"] == [] and final["cashu_change"]
        assert await ecash.redeem(final["cashu_change"]) > 0
        await assert_balanced(node)
