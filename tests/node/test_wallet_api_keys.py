"""Keys on the wallet API: every key that pays opens every account route, a client's own
admin key, and the answers to input no mint could have issued or a body that stalls."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path
from typing import Any

import aiohttp
from support.ecash import EcashFactory
from support.node import RunningNode, run_node
from support.node_calls import call

from mints.models import Proof
from mints.token import encode_token, parse_token
from routstr_node.audit_command import run_audit
from routstr_node.demo.mint import LocalMint
from routstr_node.demo.upstream import RunningUpstream


def _code(answer: tuple[int, Any]) -> tuple[int, str]:
    status, body = answer
    return status, body["error"]["code"]


async def test_every_account_route_takes_every_paying_key(
    node: RunningNode, mint: LocalMint, ecash: EcashFactory, http: aiohttp.ClientSession
) -> None:
    """The API key as Bearer or X-API-Key, and a Cashu token used as the key: the same
    account on the wallet routes and on Routstr's own."""
    token = await ecash.token(1000, mint_url=mint.url)
    as_token = {"Authorization": f"Bearer {token}"}
    wallet = f"{node.url}/v1/wallet"

    # a token seen for the first time on an account route is redeemed into its account
    status, seen = await call(http, "GET", f"{wallet}/balance", headers=as_token)
    assert (status, seen["balance_msat"], seen["balance"]) == (200, 1_000_000, 1000)
    topup = await ecash.token(200, mint_url=mint.url)
    status, added = await call(
        http, "POST", f"{wallet}/topup", headers=as_token, body={"cashu_token": topup}
    )
    assert (status, added["amount_added"], added["balance"]) == (200, 200, 1200)
    status, out = await call(
        http, "POST", f"{wallet}/withdraw", headers=as_token, body={"amount": 300}
    )
    assert status == 200 and await ecash.redeem(out["cashu_token"]) == 300
    status, listed = await call(http, "GET", f"{wallet}/withdrawals", headers=as_token)
    assert [w["amount"] for w in listed["withdrawals"]] == [300]
    status, info = await call(http, "GET", f"{node.url}/v1/balance/info", headers=as_token)
    assert (status, info["balance"]) == (200, 900_000)

    created = (
        await call(
            http,
            "POST",
            f"{wallet}/create",
            body={"cashu_token": await ecash.token(500, mint_url=mint.url)},
        )
    )[1]
    by_header = {"X-API-Key": created["api_key"]}
    for route in ("balance", "withdrawals"):
        status, _ = await call(http, "GET", f"{wallet}/{route}", headers=by_header)
        assert status == 200
    status, info = await call(http, "GET", f"{node.url}/v1/balance/info", headers=by_header)
    assert (status, info["balance"]) == (200, 500_000)
    report = await run_audit(node.settings)
    assert report["balanced"], report


async def test_a_create_takes_the_clients_own_admin_key(
    node: RunningNode, mint: LocalMint, ecash: EcashFactory, http: aiohttp.ClientSession
) -> None:
    url = f"{node.url}/v1/wallet/create"
    own = "correct-horse-battery-staple"
    token = await ecash.token(300, mint_url=mint.url)

    status, created = await call(http, "POST", url, body={"cashu_token": token, "admin_key": own})

    assert status == 201 and created["admin_key"] == own, created
    status, rotated = await call(http, "POST", f"{node.url}/v1/wallet/rotate", key=own)
    assert status == 200 and rotated["api_key"].startswith("sk-")
    status, _ = await call(http, "GET", f"{node.url}/v1/wallet/balance", key=rotated["api_key"])
    assert status == 200
    # the API key rotates nothing, and a key taken or malformed is refused, token unspent
    assert _code(
        await call(http, "POST", f"{node.url}/v1/wallet/rotate", key=rotated["api_key"])
    ) == (
        403,
        "admin_key_required",
    )
    other = await ecash.token(100, mint_url=mint.url)
    for bad in (own, "too-short", 12345678901234567, "has spaces in it, see", "sk-" + "a" * 20):
        answer = await call(http, "POST", url, body={"cashu_token": other, "admin_key": bad})
        assert _code(answer) == (400, "invalid_admin_key"), (bad, answer)
    assert not await ecash.is_spent(other)


async def test_a_token_no_mint_could_issue_is_invalid(
    node: RunningNode, mint: LocalMint, ecash: EcashFactory, http: aiohttp.ClientSession
) -> None:
    """Amounts past 64 bits once answered 500 (OverflowError): a token this big is simply
    not valid, whatever the route."""
    real = parse_token(await ecash.token(8, mint_url=mint.url)).proofs[0]
    huge = [Proof(2**63, real.keyset_id, real.secret, real.C)]
    many = [Proof(2**50, real.keyset_id, f"{real.secret}{i}", real.C) for i in range(4)]
    for proofs in (huge, many):
        for legacy in (False, True):
            text = encode_token(mint.url, proofs, legacy=legacy)
            answer = await call(
                http, "POST", f"{node.url}/v1/wallet/create", body={"cashu_token": text}
            )
            assert _code(answer) == (400, "cashu_token_invalid"), answer
            paid = await call(
                http,
                "POST",
                f"{node.url}/v1/chat/completions",
                body={"model": "test-model", "messages": [{"role": "user", "content": "x"}]},
                headers={"X-Cashu": text},
            )
            assert _code(paid) == (400, "cashu_token_invalid"), paid


async def test_a_malformed_token_is_told_what_is_wrong(
    node: RunningNode, http: aiohttp.ClientSession
) -> None:
    answer = await call(
        http, "POST", f"{node.url}/v1/wallet/create", body={"cashu_token": "cashuAeyJ0b2tlbiI6W119"}
    )
    status, body = answer
    assert (status, body["error"]["code"]) == (400, "cashu_token_invalid")
    assert "Exception" not in body["error"]["message"]
    assert "proofs" in body["error"]["message"]


async def test_the_data_directory_is_the_nodes_own(node: RunningNode) -> None:
    assert stat.S_IMODE(node.data_dir.stat().st_mode) == 0o700
    for name in ("wallet.seed", "nostr.key", "wallet.sqlite3"):
        assert stat.S_IMODE((node.data_dir / name).stat().st_mode) == 0o600, name


async def _raw_request(port: int, head: bytes, parts: list[bytes], pause_s: float) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        for part in parts:
            await writer.drain()
            await asyncio.sleep(pause_s)
            writer.write(part)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()


async def test_a_body_that_stops_arriving_is_cut_and_a_slow_one_is_not(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream
) -> None:
    limits = "[limits]\nbody_timeout_s = 1\n"
    async with run_node(tmp_path / "node", [mint.url], upstream.url, extra_toml=limits) as node:
        port = int(node.url.rsplit(":", 1)[1])
        body = json.dumps({"cashu_token": "cashuBnotatoken"}).encode()
        head = (
            b"POST /v1/wallet/create HTTP/1.1\r\nHost: node\r\n"
            + f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n".encode()
        )
        # a few bytes, then nothing: cut after a second, and the (keep-alive) connection
        # closed by the node: read to its end here
        stalled = await _raw_request(port, head + b"\r\n" + body[:5], [], 0)
        assert stalled.startswith(b"HTTP/1.1 408"), stalled[:200]
        assert b'"request_timeout"' in stalled and b"Connection: close" in stalled
        # a byte every 0.3 s never stalls for a second: read whole, and answered for itself
        parts = [body[i : i + 4] for i in range(0, len(body), 4)]
        slow = await _raw_request(port, head + b"Connection: close\r\n\r\n", parts, 0.3)
        assert slow.startswith(b"HTTP/1.1 400"), slow[:200]
        assert b'"cashu_token_invalid"' in slow
