"""Money under concurrency, end to end: no overspending, one payment per token, and a
client that goes away mid-stream pays for what it got (CONTRACT §3, §8).
"""

from __future__ import annotations

import asyncio
import json
import logging
import traceback
from collections.abc import Mapping
from typing import Any

import aiohttp
import openai
import pytest
from support.e2e import (
    SdkFactory,
    assert_balanced,
    chat_body,
    cost_of,
    get,
    post,
    reservation_of,
    reservations,
    token_account,
    total_reserved_msat,
    wait_until_no_open_streams,
    wait_until_settled,
)
from support.ecash import EcashFactory
from support.node import RunningNode
from support.wallets import query

from routstr_node.demo.mint import LocalMint
from routstr_node.demo.upstream import RunningUpstream, count_tokens

PARALLEL = 30
MAX_TOKENS = 5
LONG_PROMPT = " ".join(["a"] * 200)  # 200 tokens upstream, ~400 bytes in the body
STORY_PROMPT = "tell me a story about cats"


async def _sdk_answer(
    client: Any, prompt: str, max_tokens: int = MAX_TOKENS
) -> tuple[int, str | None, Mapping[str, str]]:
    """(status, error code, response headers) of one chat request through the SDK."""
    try:
        raw = await client.chat.completions.with_raw_response.create(
            model="test-model",
            messages=[{"role": "user", "content": prompt}],
            max_tokens=max_tokens,
        )
    except openai.APIStatusError as exc:
        return exc.status_code, exc.code, {}
    return raw.status_code, None, raw.headers


async def _sdk_call(client: Any, prompt: str) -> tuple[int, str | None, int]:
    """(status, error code, charged msat) of one chat request through the SDK."""
    status, code, headers = await _sdk_answer(client, prompt)
    return status, code, int(headers.get("X-Routstr-Cost-Msats", 0))


def _balance_history(node: RunningNode, account_id: int) -> list[tuple[int, int]]:
    """(balance, reserved) of an account after each of its journal rows, in order."""
    rows = query(
        node.data_dir,
        "SELECT balance_delta_msat, reserved_delta_msat FROM journal"
        " WHERE account_id = ? ORDER BY id",
        (account_id,),
    )
    balance = reserved = 0
    history = []
    for balance_delta, reserved_delta in rows:
        balance += int(balance_delta)
        reserved += int(reserved_delta)
        history.append((balance, reserved))
    return history


def _account_id(node: RunningNode, kind: str) -> int:
    ((account_id,),) = query(node.data_dir, "SELECT id FROM accounts WHERE kind = ?", (kind,))
    return int(account_id)


async def test_parallel_requests_on_one_account_never_overspend(
    node: RunningNode,
    upstream: RunningUpstream,
    ecash: EcashFactory,
    mint: LocalMint,
    openai_sdk: SdkFactory,
) -> None:
    body = chat_body(LONG_PROMPT, max_tokens=MAX_TOKENS)
    reserve = reservation_of(body, MAX_TOKENS)
    cost = cost_of(count_tokens(LONG_PROMPT), MAX_TOKENS)  # the reply is cut at max_tokens
    assert cost < reserve
    # the first use redeems the token; what is left then holds about 10 reservations
    token = await ecash.token(-(-(10 * reserve + cost) // 1000), mint_url=mint.url)
    client = openai_sdk(node, api_key=token)
    assert await _sdk_call(client, LONG_PROMPT) == (200, None, cost)
    account = token_account(node, token)
    assert account is not None
    funded = account.balance_msat
    assert 10 * reserve <= funded < 11 * reserve
    assert PARALLEL * cost > funded  # not all of them can be paid, whatever the timing

    upstream.behaviour.delay_s = 0.3  # requests overlap: many reservations at once
    results = await asyncio.gather(*(_sdk_call(client, LONG_PROMPT) for _ in range(PARALLEL)))

    paid = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] != 200]
    assert paid, results
    assert refused, results
    assert all(r[2] == cost for r in paid), paid
    assert all(r[:2] == (402, "insufficient_balance") for r in refused), refused
    assert len(paid) * cost <= funded
    assert len(upstream.requests) == 1 + len(paid)  # refused requests never went upstream

    account = token_account(node, token)
    assert account is not None
    assert (account.balance_msat, account.reserved_msat) == (funded - len(paid) * cost, 0)
    history = _balance_history(node, _account_id(node, "token"))
    assert all(balance >= 0 and reserved >= 0 for balance, reserved in history), history
    assert max(reserved for _, reserved in history) <= funded
    assert all(state != "open" for _, state, _ in reservations(node))
    await assert_balanced(node)


async def test_one_x_cashu_token_in_parallel_requests_pays_once(
    node: RunningNode,
    upstream: RunningUpstream,
    ecash: EcashFactory,
    mint: LocalMint,
    openai_sdk: SdkFactory,
) -> None:
    token = await ecash.token(300, mint_url=mint.url)
    client = openai_sdk(node, x_cashu=token)

    async def call() -> tuple[int, str | None, str | None]:
        status, code, headers = await _sdk_answer(client, "hi", max_tokens=5)
        if code is not None:
            return status, code, None
        return status, headers["X-Routstr-Cost-Msats"], headers["X-Cashu"]

    results = await asyncio.gather(*(call() for _ in range(10)))
    paid = [r for r in results if r[0] == 200]
    assert len(paid) == 1, results
    others = [r[:2] for r in results if r[0] != 200]
    assert all(r in ((409, "cashu_token_pending"), (400, "cashu_token_spent")) for r in others)
    assert len(upstream.requests) == 1
    (_, cost, change) = paid[0]
    assert cost is not None and change is not None
    assert await ecash.redeem(change) == (300_000 - int(cost)) // 1000
    await assert_balanced(node)


async def test_one_token_as_key_in_parallel_first_uses_is_redeemed_once(
    node: RunningNode,
    upstream: RunningUpstream,
    ecash: EcashFactory,
    mint: LocalMint,
    openai_sdk: SdkFactory,
) -> None:
    token = await ecash.token(1000, mint_url=mint.url)
    client = openai_sdk(node, api_key=token)
    results = await asyncio.gather(*(_sdk_call(client, "hi there") for _ in range(10)))
    paid = [r for r in results if r[0] == 200]
    assert paid, results
    assert all(r[:2] == (409, "cashu_token_pending") for r in results if r[0] != 200), results
    assert len(upstream.requests) == len(paid)
    assert await ecash.is_spent(token)
    account = token_account(node, token)
    assert account is not None
    assert account.balance_msat == 1000 * 1000 - sum(r[2] for r in paid)
    assert account.reserved_msat == 0
    assert len(query(node.data_dir, "SELECT id FROM accounts")) == 1
    await assert_balanced(node)


def _node_error(record: logging.LogRecord) -> bool:
    """An error the node logged (the fake upstream shares the process and aiohttp's loggers)."""
    if record.levelno < logging.ERROR or record.name.startswith("routstr_node.demo"):
        return False
    if record.name.startswith("routstr_node"):
        return True
    trace = record.exc_info[2] if record.exc_info else None
    files = [frame.f_code.co_filename for frame, _ in traceback.walk_tb(trace)]
    return any("routstr_node" in f and "/demo/" not in f for f in files)


async def _read_some_then_disconnect(url: str, body: bytes, headers: dict[str, str]) -> int:
    """Read the stream until three pieces of text came, then drop the connection."""
    pieces = 0
    async with aiohttp.ClientSession() as session:
        resp = await session.post(
            url, data=body, headers={"Content-Type": "application/json", **headers}
        )
        assert resp.status == 200, await resp.read()
        async for line in resp.content:
            if not line.startswith(b"data: {"):
                continue
            choices = json.loads(line[6:]).get("choices") or [{}]
            if choices[0].get("delta", {}).get("content"):
                pieces += 1
                if pieces == 3:
                    break
        resp.close()  # the client goes away mid-stream
    return pieces


@pytest.mark.parametrize("payment", ["token-as-key", "x-cashu"])
async def test_client_gone_mid_stream_pays_for_what_was_delivered(
    node: RunningNode,
    upstream: RunningUpstream,
    ecash: EcashFactory,
    mint: LocalMint,
    payment: str,
) -> None:
    upstream.behaviour.chunk_delay_s = 0.2
    upstream.behaviour.reply_words = 40
    token = await ecash.token(500, mint_url=mint.url)
    headers = (
        {"Authorization": f"Bearer {token}"} if payment == "token-as-key" else {"X-Cashu": token}
    )
    body = chat_body(STORY_PROMPT, stream=True)
    pieces = await _read_some_then_disconnect(f"{node.url}/v1/chat/completions", body, headers)
    assert pieces == 3

    await wait_until_settled(node)
    await wait_until_no_open_streams(node)  # the handler is done (change issued, if any)
    ((reserved, state, charged),) = reservations(node)
    assert state == "charged"
    assert charged is not None
    full_reply = cost_of(count_tokens(STORY_PROMPT), 40)
    assert 0 < charged < reserved
    assert charged < full_reply  # the rest of the reply was never paid for
    assert total_reserved_msat(node) == 0
    account = token_account(node, token)
    assert account is not None
    assert account.reserved_msat == 0
    if payment == "token-as-key":
        assert account.balance_msat == 500_000 - charged
    else:
        # the change never reached the client; it stays claimable with the original token
        refund = await post(f"{node.url}/v1/wallet/refund", b"", {"X-Cashu": token})
        assert refund.status == 200, refund.raw
        assert refund.body["amount"] == (500_000 - charged) // 1000
        assert await ecash.redeem(refund.body["cashu_token"]) == (500_000 - charged) // 1000
    await assert_balanced(node)


async def test_client_gone_before_the_first_event_is_free_and_no_internal_error(
    node: RunningNode,
    upstream: RunningUpstream,
    ecash: EcashFactory,
    mint: LocalMint,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR)
    upstream.behaviour.delay_s = 1.0  # the upstream answers after the client has left
    token = await ecash.token(500, mint_url=mint.url)
    body = chat_body(STORY_PROMPT, stream=True)

    async def client() -> None:
        async with aiohttp.ClientSession() as session:
            headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
            async with session.post(f"{node.url}/v1/chat/completions", data=body, headers=headers):
                pass  # pragma: no cover - cancelled before the answer

    task = asyncio.create_task(client())
    for _ in range(400):  # until the node has forwarded the request (bounded)
        if upstream.requests:
            break
        await asyncio.sleep(0.01)
    assert upstream.requests
    task.cancel()  # the client goes away while the node waits for the upstream
    with pytest.raises(asyncio.CancelledError):
        await task

    await wait_until_settled(node)
    await wait_until_no_open_streams(node)
    ((reserved, _, charged),) = reservations(node)
    assert charged is not None
    assert 0 <= charged <= reserved  # nothing was delivered; at most the prompt
    account = token_account(node, token)
    assert account is not None
    assert (account.balance_msat, account.reserved_msat) == (500_000 - charged, 0)
    await assert_balanced(node)
    # an ordinary disconnect is no internal error: not logged as one, not counted as a 500
    errors = [r.getMessage() for r in caplog.records if _node_error(r)]
    assert errors == []
    metrics = (await get(f"{node.url}/metrics")).raw.decode()
    assert 'status="500"' not in metrics, metrics
