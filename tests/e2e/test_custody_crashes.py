"""The node killed (SIGKILL) in the middle of a money operation with a mint, for real.

The node runs as a process of its own (``routstr-node run``). Its request to the mint is
held at the fault proxy, the node is killed, and only then does the request reach the
mint, which carries it out: the node never hears of it. At the next start the node
resolves it beside serving (the identical request again, NUT-09 restore), and every
client's money is where the contract says: credited, listed, paid once.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support.accounts import balance_of, bearer, funded_auth, listed_withdrawals, settled_balance
from support.e2e import Answer, assert_error, chat_body, get, post, until
from support.ecash import EcashFactory
from support.invoices import fake_invoice
from support.mint_proxy import MintProxy
from support.node import node_toml
from support.node_process import NodeProcess
from support.wallets import query

from routstr_node.audit_command import run_audit
from routstr_node.config import load_settings
from routstr_node.demo.mint import LocalMint
from routstr_node.demo.upstream import RunningUpstream

SWAP = "POST /v1/swap"
MELT = "POST /v1/melt/bolt11"
MINT = "POST /v1/mint/bolt11"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(
    tmp_path: Path, mint_urls: list[str], upstream: RunningUpstream, mint_timeout_s: float
) -> tuple[Path, int]:
    port = _free_port()
    config = tmp_path / "node.toml"
    config.write_text(
        node_toml(tmp_path / "data", port, mint_urls, upstream.url, mint_timeout_s=mint_timeout_s)
    )
    return config, port


@pytest.fixture
async def node(
    tmp_path: Path, proxy: MintProxy, upstream: RunningUpstream
) -> AsyncIterator[NodeProcess]:
    config, port = _config(tmp_path, [proxy.url], upstream, 1.5)
    running = NodeProcess(config, port)
    await running.start()
    try:
        yield running
    finally:
        await running.kill()


async def balanced(node: NodeProcess) -> dict[str, Any]:
    report = await run_audit(load_settings(node.config))
    assert report["balanced"] and report["difference_msat"] == 0, report
    return report


async def killed_while_held(
    node: NodeProcess, proxy: MintProxy, route: str, request: Coroutine[Any, Any, Answer]
) -> None:
    """Send ``request``; once the node's call to ``route`` is held at the proxy, kill the
    node, then let the call reach the mint (which carries it out) and restart the node."""
    proxy.hold(route)
    sent = asyncio.ensure_future(request)
    await proxy.came(route)
    await node.kill()
    with contextlib.suppress(aiohttp.ClientError):
        await sent  # the client's connection died with the node
    proxy.release()
    await proxy.reached(route)
    await node.start()


async def test_killed_mid_redeem_the_same_token_then_pays(
    node: NodeProcess, proxy: MintProxy, ecash: EcashFactory
) -> None:
    token = await ecash.token(500, mint_url=proxy.url)
    body = chat_body("hello", max_tokens=20)
    url = f"{node.url}/v1/chat/completions"

    await killed_while_held(node, proxy, SWAP, post(url, body, {"X-Cashu": token}))

    assert await ecash.is_spent(token)  # the mint took it after the node died
    answer = await until(lambda: _not_pending(post(url, body, {"X-Cashu": token})))
    assert answer.status == 200, answer.raw
    cost = int(answer.headers["X-Routstr-Cost-Msats"])
    change = answer.headers["X-Cashu"]
    assert ecash.amount(change) == (500_000 - cost) // 1000
    assert await ecash.redeem(change) == ecash.amount(change)
    await balanced(node)


async def _not_pending(request: Coroutine[Any, Any, Answer]) -> Answer | None:
    answer = await request
    return None if answer.status in (409, 503) else answer


async def test_killed_mid_create_the_same_token_answers_the_keys(
    node: NodeProcess, proxy: MintProxy, ecash: EcashFactory
) -> None:
    token = await ecash.token(400, mint_url=proxy.url)
    url = f"{node.url}/v1/wallet/create"

    await killed_while_held(node, proxy, SWAP, post(url, {"cashu_token": token}))

    created = await until(lambda: _not_pending(post(url, {"cashu_token": token})))
    assert created.status == 201, created.raw
    assert created.body["balance_msat"] == 400_000
    seen = await balance_of(node.url, bearer(created.body["api_key"]))
    assert seen["balance_msat"] == 400_000
    await balanced(node)


async def test_killed_mid_withdrawal_the_token_is_listed(
    node: NodeProcess, proxy: MintProxy, ecash: EcashFactory
) -> None:
    auth = await funded_auth(node.url, ecash, proxy.url, 1000)

    await killed_while_held(
        node, proxy, SWAP, post(f"{node.url}/v1/wallet/withdraw", {"amount": 300}, auth)
    )

    [withdrawal] = await until(lambda: listed_withdrawals(node.url, auth))
    assert withdrawal["amount"] == 300
    assert await ecash.redeem(withdrawal["cashu_token"]) == 300
    after = await balance_of(node.url, auth)
    assert (after["balance_msat"], after["reserved_msat"]) == (700_000, 0)
    await balanced(node)


async def test_killed_mid_invoice_payment_it_is_paid_and_charged_once(
    node: NodeProcess, proxy: MintProxy, ecash: EcashFactory
) -> None:
    auth = await funded_auth(node.url, ecash, proxy.url, 1000)
    pay = post(f"{node.url}/v1/wallet/withdraw", {"invoice": fake_invoice(200)}, auth)

    await killed_while_held(node, proxy, MELT, pay)

    after = await until(lambda: settled_balance(node.url, auth))
    assert 797_000 <= after["balance_msat"] <= 800_000  # 200 and a fee within the reserve
    await balanced(node)


async def test_killed_mid_lightning_in_the_invoice_is_credited_once(
    node: NodeProcess, proxy: MintProxy
) -> None:
    created = await post(f"{node.url}/v1/wallet/invoice", {"amount": 256})
    url = f"{node.url}/v1/wallet/invoice/{created.body['invoice_id']}"
    secret = {"X-Invoice-Secret": created.body["secret"]}

    await killed_while_held(node, proxy, MINT, get(url))

    async def keys() -> Answer | None:
        seen = await get(url, secret)
        return seen if seen.status == 200 and seen.body.get("api_key") else None

    claimed = await until(keys)
    assert claimed.body["balance_msat"] == 256_000
    await balanced(node)


async def test_the_node_serves_while_recovery_waits_on_a_hanging_mint(
    tmp_path: Path,
    proxy: MintProxy,
    fee_mint: LocalMint,
    upstream: RunningUpstream,
    ecash: EcashFactory,
) -> None:
    """A pending redeem at a mint that hangs (every swap held) when the node starts: the
    node answers at once, other mints' tokens pay, and only that token is told to wait."""
    config, port = _config(tmp_path, [proxy.url, fee_mint.url], upstream, 30.0)
    node = NodeProcess(config, port)
    await node.start()
    try:
        token = await ecash.token(500, mint_url=proxy.url)
        body = chat_body("hello", max_tokens=20)
        url = f"{node.url}/v1/chat/completions"
        proxy.hold(SWAP, times=100)  # every swap at this mint hangs until released
        sent = asyncio.ensure_future(post(url, body, {"X-Cashu": token}))
        await proxy.came(SWAP)
        await node.kill()
        with contextlib.suppress(aiohttp.ClientError):
            await sent

        await node.start()  # ready while the recovery's swap hangs at the mint
        await proxy.came(SWAP, 2)  # the recovery sent it again: held too
        assert (await get(f"{node.url}/health")).status == 200
        other = await ecash.token(500, mint_url=fee_mint.url)
        served = await post(url, body, {"X-Cashu": other})
        assert served.status == 200, served.raw
        waiting = await post(url, body, {"X-Cashu": token})
        assert_error(waiting, 503, "cashu_mint_unreachable")
        assert "same token" in waiting.body["error"]["message"]
        assert proxy.delivered.get(SWAP, 0) == 0  # all of that while the mint still hung

        proxy.release()
        answer = await until(lambda: _not_pending(post(url, body, {"X-Cashu": token})))
        assert answer.status == 200, answer.raw
        await balanced(node)
    finally:
        await node.kill()


async def test_killed_mid_stream_the_delivered_output_is_charged_at_start(
    node: NodeProcess, proxy: MintProxy, ecash: EcashFactory, upstream: RunningUpstream
) -> None:
    """A crash mid-stream neither makes the output delivered free nor charges the whole
    reservation: what the stream had delivered (written down about every second) is
    charged at the next start, and the rest comes back."""
    upstream.behaviour.reply_words = 60
    upstream.behaviour.chunk_delay_s = 0.2  # 12 s of answer: killed well before its end
    token = await ecash.token(500, mint_url=proxy.url)
    body = chat_body("tell me a long story", max_tokens=50, stream=True)
    received: list[bytes] = []
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{node.url}/v1/chat/completions", data=body, headers={"X-Cashu": token}) as resp,
    ):
        assert resp.status == 200
        async for chunk in resp.content.iter_any():
            received.append(chunk)
            if b"".join(received).count(b"data:") >= 12:  # over two seconds of output
                break
        await node.kill()

    await node.start()
    [(reserved, charged)] = query(
        node.config.parent / "data",
        "SELECT amount_msat, charged_msat FROM reservations WHERE purpose = 'request'",
    )
    assert 0 < charged < reserved
    refund = await post(f"{node.url}/v1/wallet/refund", b"", {"X-Cashu": token})
    assert refund.status == 200, refund.raw
    assert refund.body["amount"] == (500_000 - charged) // 1000
    assert await ecash.redeem(refund.body["cashu_token"]) == refund.body["amount"]
    await balanced(node)
