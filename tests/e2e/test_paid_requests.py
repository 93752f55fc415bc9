"""Paying for requests, end to end: exact charges, change, refunds, streams (CONTRACT §3).

Every test runs a real node in front of the fake upstream, pays with ecash minted by
nutshell's own wallet at a real local mint, and checks the money with nutshell too
(change redeemed for exactly what it should be worth) and with the node's audit.
"""

from __future__ import annotations

import asyncio
import json
import math
from fractions import Fraction
from typing import Any

import aiohttp
import pytest
from cashu.core.nuts.nut18 import PaymentRequest
from support.e2e import (
    SdkFactory,
    assert_balanced,
    assert_error,
    chat_body,
    chat_text,
    cost_of,
    get,
    parse_sse,
    post,
    reservation_of,
    reservations,
    stream_post,
    token_account,
)
from support.ecash import EcashFactory
from support.node import RunningNode

from routstr_node.demo.mint import LocalMint
from routstr_node.demo.upstream import RunningUpstream, count_tokens

PROMPT = "hello there friend"
REPLY = f"Echo: {PROMPT}"  # the fake upstream echoes the last user message


def change_sat(token_sat: int, cost_msat: int) -> int:
    """What the change of an X-Cashu payment is worth (no mint fee at `mint`)."""
    return (token_sat * 1000 - cost_msat) // 1000


def usage_cost(obj: Any) -> dict[str, int]:
    """`usage.cost` of an SDK object (an extra field the SDK keeps)."""
    cost: dict[str, int] = obj.model_dump()["usage"]["cost"]
    return cost


async def test_x_cashu_chat_charges_exactly_and_returns_change(
    node: RunningNode,
    upstream: RunningUpstream,
    ecash: EcashFactory,
    mint: LocalMint,
    openai_sdk: SdkFactory,
) -> None:
    token = await ecash.token(500, mint_url=mint.url)
    client = openai_sdk(node, api_key="anything", x_cashu=token)
    raw = await client.chat.completions.with_raw_response.create(
        model="test-model", messages=[{"role": "user", "content": PROMPT}], max_tokens=20
    )
    completion = raw.parse()

    assert completion.choices[0].message.content == REPLY
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == count_tokens(PROMPT)
    assert completion.usage.completion_tokens == count_tokens(REPLY)
    expected = cost_of(completion.usage.prompt_tokens, completion.usage.completion_tokens)
    assert raw.headers["X-Routstr-Cost-Msats"] == str(expected)
    assert usage_cost(completion) == {
        "total_msats": expected,
        "input_msats": completion.usage.prompt_tokens * 1000,
        "output_msats": completion.usage.completion_tokens * 2000,
    }
    assert raw.headers.get("X-Request-Id")
    assert await ecash.is_spent(token)

    change = raw.headers["X-Cashu"]
    assert change.startswith("cashuB")
    # the change stays claimable with the original token, always the same token
    for _ in range(2):
        refund = await post(f"{node.url}/v1/wallet/refund", b"", {"X-Cashu": token})
        assert refund.status == 200, refund.raw
        assert refund.body == {"cashu_token": change, "amount": change_sat(500, expected)}
    assert await ecash.redeem(change) == change_sat(500, expected)
    assert reservations(node)[-1][1:] == ("charged", expected)
    await assert_balanced(node)


async def test_x_cashu_legacy_token_gets_legacy_change(
    node: RunningNode, ecash: EcashFactory, mint: LocalMint
) -> None:
    token = await ecash.token(300, mint_url=mint.url, legacy=True)
    answer = await post(f"{node.url}/v1/chat/completions", chat_body(PROMPT), {"X-Cashu": token})
    assert answer.status == 200, answer.raw
    cost = int(answer.headers["X-Routstr-Cost-Msats"])
    assert cost == answer.body["usage"]["cost"]["total_msats"] > 0
    change = answer.headers["X-Cashu"]
    assert change.startswith("cashuA")
    assert await ecash.redeem(change) == change_sat(300, cost)


async def test_refund_of_a_token_that_never_paid_is_not_found(
    node: RunningNode, ecash: EcashFactory, mint: LocalMint
) -> None:
    token = await ecash.token(5, mint_url=mint.url)
    answer = await post(f"{node.url}/v1/wallet/refund", b"", {"X-Cashu": token})
    assert_error(answer, 404, "not_found", "not_found_error")
    assert not await ecash.is_spent(token)


@pytest.mark.parametrize("legacy", [False, True], ids=["cashuB", "cashuA"])
async def test_token_as_key_redeems_once_then_spends_the_balance(
    node: RunningNode,
    ecash: EcashFactory,
    mint: LocalMint,
    legacy: bool,
    openai_sdk: SdkFactory,
) -> None:
    token = await ecash.token(1000, mint_url=mint.url, legacy=legacy)
    assert token.startswith("cashuA" if legacy else "cashuB")
    client = openai_sdk(node, api_key=token)
    spent = 0
    for n, prompt in enumerate(["one two three", "four five", "six"]):
        raw = await client.chat.completions.with_raw_response.create(
            model="test-model", messages=[{"role": "user", "content": prompt}], max_tokens=10
        )
        completion = raw.parse()
        assert completion.usage is not None
        cost = cost_of(completion.usage.prompt_tokens, completion.usage.completion_tokens)
        assert int(raw.headers["X-Routstr-Cost-Msats"]) == cost
        assert usage_cost(completion)["total_msats"] == cost
        assert "X-Cashu" not in raw.headers  # no change: the rest stays on the account
        spent += cost
        if n == 0:
            assert await ecash.is_spent(token)  # redeemed at first use
        account = token_account(node, token)
        assert account is not None
        assert (account.kind, account.balance_msat, account.reserved_msat) == (
            "token",
            1000 * 1000 - spent,
            0,
        )
    # every account route takes the token as its key: Routstr's dialect and the wallet's
    key = {"Authorization": f"Bearer {token}"}
    info = await get(f"{node.url}/v1/balance/info", key)
    assert info.status == 200, info.raw
    assert info.body["balance"] == 1000 * 1000 - spent
    wallet = await get(f"{node.url}/v1/wallet/balance", key)
    assert wallet.status == 200, wallet.raw
    assert wallet.body["balance_msat"] == 1000 * 1000 - spent
    assert wallet.body["balance"] == (1000 * 1000 - spent) // 1000
    as_x_api_key = await get(f"{node.url}/v1/wallet/balance", {"X-API-Key": token})
    assert as_x_api_key.body == wallet.body
    for path in ("/v1/wallet/refund", "/v1/balance/refund"):  # not an X-Cashu payment
        refund = await post(f"{node.url}{path}", b"", {"X-Cashu": token})
        assert_error(refund, 404, "not_found", "not_found_error")
        assert "as a key" in refund.body["error"]["message"]
    await assert_balanced(node)


@pytest.mark.parametrize("include_usage", [True, False], ids=["usage-asked", "usage-not-asked"])
async def test_stream_ends_with_usage_event_carrying_cost_and_change(
    node: RunningNode,
    upstream: RunningUpstream,
    ecash: EcashFactory,
    mint: LocalMint,
    include_usage: bool,
) -> None:
    token = await ecash.token(400, mint_url=mint.url)
    extra: dict[str, Any] = {"stream": True}
    if include_usage:
        extra["stream_options"] = {"include_usage": True}
    status, headers, events, raw = await stream_post(
        f"{node.url}/v1/chat/completions",
        chat_body(PROMPT, max_tokens=30, **extra),
        {"X-Cashu": token},
    )
    assert status == 200, raw
    assert headers["Content-Type"].startswith("text/event-stream")
    assert headers.get("X-Request-Id")
    assert events[-1].data == "[DONE]"
    final = events[-2].json
    assert final["choices"] == []
    usage = final["usage"]
    assert usage["prompt_tokens"] == count_tokens(PROMPT)
    assert usage["completion_tokens"] == count_tokens(REPLY)
    cost = cost_of(usage["prompt_tokens"], usage["completion_tokens"])
    assert usage["cost"] == {
        "total_msats": cost,
        "input_msats": usage["prompt_tokens"] * 1000,
        "output_msats": usage["completion_tokens"] * 2000,
    }
    assert chat_text(events) == REPLY
    # only the final event carries usage numbers and change
    for event in events[:-2]:
        assert not (event.json.get("usage") or {}), event.data
        assert "cashu_change" not in event.json
    forwarded = upstream.requests[-1].json
    assert forwarded["stream"] is True
    assert forwarded["stream_options"]["include_usage"] is True

    change = final["cashu_change"]
    assert await ecash.redeem(change) == change_sat(400, cost)
    refund = await post(f"{node.url}/v1/wallet/refund", b"", {"X-Cashu": token})
    assert refund.body == {"cashu_token": change, "amount": change_sat(400, cost)}
    await assert_balanced(node)


async def test_stream_through_the_sdk_sees_usage_and_change(
    node: RunningNode,
    ecash: EcashFactory,
    mint: LocalMint,
    openai_sdk: SdkFactory,
) -> None:
    token = await ecash.token(400, mint_url=mint.url)
    client = openai_sdk(node, x_cashu=token)
    stream = await client.chat.completions.create(
        model="test-model",
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=30,
        stream=True,
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REPLY
    final = chunks[-1]
    assert final.choices == []
    assert final.usage is not None
    cost = cost_of(final.usage.prompt_tokens, final.usage.completion_tokens)
    assert usage_cost(final)["total_msats"] == cost
    extra = final.model_extra or {}
    assert await ecash.redeem(extra["cashu_change"]) == change_sat(400, cost)


async def test_completions_embeddings_and_responses_are_charged_from_usage(
    node: RunningNode,
    upstream: RunningUpstream,
    ecash: EcashFactory,
    mint: LocalMint,
    openai_sdk: SdkFactory,
) -> None:
    token = await ecash.token(2000, mint_url=mint.url)
    client = openai_sdk(node, api_key=token)
    charged = 0

    raw_completion = await client.completions.with_raw_response.create(
        model="test-model", prompt="alpha beta gamma delta", max_tokens=10
    )
    completion = raw_completion.parse()
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 4
    cost = cost_of(completion.usage.prompt_tokens, completion.usage.completion_tokens)
    assert int(raw_completion.headers["X-Routstr-Cost-Msats"]) == cost
    assert usage_cost(completion)["total_msats"] == cost
    charged += cost

    raw_embedding = await client.embeddings.with_raw_response.create(
        model="test-model", input="one two three four five"
    )
    embedding = raw_embedding.parse()
    assert embedding.usage.prompt_tokens == 5
    assert int(raw_embedding.headers["X-Routstr-Cost-Msats"]) == 5 * 1000
    assert usage_cost(embedding) == {"total_msats": 5000, "input_msats": 5000, "output_msats": 0}
    assert len(embedding.data) == 1
    charged += 5000

    raw_response = await client.responses.with_raw_response.create(
        model="test-model", input="red green blue", max_output_tokens=10
    )
    response = raw_response.parse()
    assert response.usage is not None
    assert response.usage.input_tokens == 3
    assert response.output_text == "Echo: red green blue"
    cost = cost_of(response.usage.input_tokens, response.usage.output_tokens)
    assert int(raw_response.headers["X-Routstr-Cost-Msats"]) == cost
    assert usage_cost(response)["total_msats"] == cost
    charged += cost

    stream = await client.responses.create(
        model="test-model", input="cyan magenta", max_output_tokens=10, stream=True
    )
    events = [event async for event in stream]
    (completed,) = [e for e in events if e.type == "response.completed"]
    final = completed.model_dump()["response"]["usage"]
    assert (final["input_tokens"], final["output_tokens"]) == (2, 3)
    cost = cost_of(2, 3)
    assert final["cost"]["total_msats"] == cost
    charged += cost

    assert all(r.path.startswith("/v1/") for r in upstream.requests)
    assert [r.json["model"] for r in upstream.requests] == ["fake-upstream-model"] * 4
    account = token_account(node, token)
    assert account is not None
    assert (account.balance_msat, account.reserved_msat) == (2000 * 1000 - charged, 0)
    await assert_balanced(node)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_upstream_sees_its_model_and_key_never_the_clients_payment(
    node: RunningNode,
    upstream: RunningUpstream,
    ecash: EcashFactory,
    mint: LocalMint,
    stream: bool,
) -> None:
    upstream.behaviour.expected_api_key = "sk-upstream-secret"  # anything else: upstream 401
    key_token = await ecash.token(300, mint_url=mint.url)
    pay_token = await ecash.token(300, mint_url=mint.url)
    headers = {"Authorization": f"Bearer {key_token}", "X-Cashu": pay_token}
    answer = await post(
        f"{node.url}/v1/chat/completions", chat_body(PROMPT, stream=stream), headers
    )
    assert answer.status == 200, answer.raw
    (forwarded,) = upstream.requests
    assert forwarded.json["model"] == "fake-upstream-model"
    assert forwarded.headers["Authorization"] == "Bearer sk-upstream-secret"
    assert "X-Cashu" not in forwarded.headers
    assert "X-API-Key" not in forwarded.headers
    seen = json.dumps(dict(forwarded.headers)).encode() + forwarded.body
    assert b"cashu" not in seen
    # X-Cashu paid; the Authorization token was never touched
    assert await ecash.is_spent(pay_token)
    assert not await ecash.is_spent(key_token)
    assert token_account(node, key_token) is None


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_missing_usage_is_charged_from_the_nodes_count_never_free(
    node: RunningNode,
    upstream: RunningUpstream,
    ecash: EcashFactory,
    mint: LocalMint,
    stream: bool,
) -> None:
    upstream.behaviour.omit_usage = True
    token = await ecash.token(400, mint_url=mint.url)
    url = f"{node.url}/v1/chat/completions"
    body = chat_body("some words for the node to count", max_tokens=20, stream=stream)
    if stream:
        status, _, events, raw = await stream_post(url, body, {"X-Cashu": token})
        assert status == 200, raw
        assert events[-1].data == "[DONE]"
        final = events[-2].json
        assert final["choices"] == []
        cost = final["usage"]["cost"]["total_msats"]
        change = final["cashu_change"]
    else:
        answer = await post(url, body, {"X-Cashu": token})
        assert answer.status == 200, answer.raw
        cost = int(answer.headers["X-Routstr-Cost-Msats"])
        assert answer.body["usage"]["cost"]["total_msats"] == cost
        change = answer.headers["X-Cashu"]
    ((reserved, state, charged),) = reservations(node)
    assert state == "charged"
    assert charged == cost
    assert 0 < cost <= reserved
    assert await ecash.redeem(change) == change_sat(400, cost)
    await assert_balanced(node)


async def test_usd_priced_model_costs_exactly(
    node: RunningNode,
    upstream: RunningUpstream,
    ecash: EcashFactory,
    mint: LocalMint,
    openai_sdk: SdkFactory,
) -> None:
    """$0.15 / $0.60 per 1M tokens at 100000 USD/BTC: 0.15 and 0.6 msat per token."""
    upstream.behaviour.reply_words = 1000
    token = await ecash.token(5, mint_url=mint.url)
    client = openai_sdk(node, x_cashu=token)
    raw = await client.chat.completions.with_raw_response.create(
        model="usd-model", messages=[{"role": "user", "content": " ".join(["w"] * 1000)}]
    )
    completion = raw.parse()
    assert completion.usage is not None
    input_tokens = completion.usage.prompt_tokens
    output_tokens = completion.usage.completion_tokens
    assert (input_tokens, output_tokens) == (1000, 1000)
    expected = math.ceil(Fraction(15, 100) * input_tokens + Fraction(60, 100) * output_tokens)
    assert expected == 750
    assert raw.headers["X-Routstr-Cost-Msats"] == "750"
    assert usage_cost(completion) == {"total_msats": 750, "input_msats": 150, "output_msats": 600}
    assert upstream.requests[-1].json["model"] == "usd-model"
    assert await ecash.redeem(raw.headers["X-Cashu"]) == change_sat(5, 750)
    await assert_balanced(node)


async def test_sk_account_pays_from_its_balance(
    node: RunningNode,
    ecash: EcashFactory,
    mint: LocalMint,
    openai_sdk: SdkFactory,
) -> None:
    token = await ecash.token(500, mint_url=mint.url)
    created = await post(f"{node.url}/v1/wallet/create", {"cashu_token": token})
    assert created.status == 201, created.raw
    assert created.body["api_key"].startswith("sk-")
    assert created.body["balance"] == 500
    assert created.body["balance_msat"] == 500_000
    api_key = created.body["api_key"]

    client = openai_sdk(node, api_key=api_key)
    raw = await client.chat.completions.with_raw_response.create(
        model="test-model", messages=[{"role": "user", "content": PROMPT}], max_tokens=10
    )
    first = int(raw.headers["X-Routstr-Cost-Msats"])
    assert first == cost_of(count_tokens(PROMPT), count_tokens(REPLY))
    # X-API-Key is the other way to present the key
    answer = await post(
        f"{node.url}/v1/chat/completions", chat_body(PROMPT, max_tokens=10), {"X-API-Key": api_key}
    )
    assert answer.status == 200, answer.raw
    second = int(answer.headers["X-Routstr-Cost-Msats"])

    balance = await get(f"{node.url}/v1/wallet/balance", {"Authorization": f"Bearer {api_key}"})
    assert balance.status == 200, balance.raw
    left = 500_000 - first - second
    assert balance.body["balance_msat"] == left
    assert balance.body["balance"] == left // 1000
    assert balance.body["reserved_msat"] == 0
    await assert_balanced(node)


async def test_responses_stream_ends_with_the_contract_usage_event(
    node: RunningNode, ecash: EcashFactory, mint: LocalMint
) -> None:
    token = await ecash.token(300, mint_url=mint.url)
    body = b'{"model": "test-model", "input": "red green blue", "stream": true}'
    status, _, events, raw = await stream_post(f"{node.url}/v1/responses", body, {"X-Cashu": token})
    assert status == 200, raw
    # as every stream, it ends with the usage event, then data: [DONE]; here that is the
    # Responses API's own completed event (an event of a type of its own breaks the
    # SDKs' stream helpers), the cost in its response's usage too
    assert events[-1].data == "[DONE]"
    assert [e.name for e in events].count("response.completed") == 1
    assert events[-2].name == "response.completed"
    final = events[-2].json
    assert final["type"] == "response.completed" and final["choices"] == []
    cost = final["usage"]["cost"]["total_msats"]
    assert cost == cost_of(3, 4)
    assert final["response"]["usage"] == final["usage"]
    assert (final["usage"]["input_tokens"], final["usage"]["output_tokens"]) == (3, 4)
    assert await ecash.redeem(final["cashu_change"]) == change_sat(300, cost)


async def test_responses_without_upstream_usage_count_under_the_responses_names(
    node: RunningNode, upstream: RunningUpstream, ecash: EcashFactory, mint: LocalMint
) -> None:
    upstream.behaviour.omit_usage = True
    token = await ecash.token(300, mint_url=mint.url)
    url = f"{node.url}/v1/responses"
    plain = await post(
        url, b'{"model": "test-model", "input": "red green blue"}', {"X-Cashu": token}
    )
    assert plain.status == 200, plain.raw
    usage = plain.body["usage"]
    assert {"input_tokens", "output_tokens", "total_tokens", "cost"} <= set(usage)
    assert "prompt_tokens" not in usage
    assert usage["cost"]["total_msats"] == int(plain.headers["X-Routstr-Cost-Msats"])
    status, _, events, raw = await stream_post(
        url,
        b'{"model": "test-model", "input": "red green blue", "stream": true}',
        {"X-Cashu": await ecash.token(300, mint_url=mint.url)},
    )
    assert status == 200, raw
    final = events[-2].json
    assert final["type"] == "response.completed"
    streamed = final["response"]["usage"]
    assert streamed["input_tokens"] > 0 and streamed["output_tokens"] > 0
    assert streamed["total_tokens"] == streamed["input_tokens"] + streamed["output_tokens"]
    assert "prompt_tokens" not in streamed
    await assert_balanced(node)


async def test_refund_during_the_request_does_not_split_the_change(
    node: RunningNode, upstream: RunningUpstream, ecash: EcashFactory, mint: LocalMint
) -> None:
    upstream.behaviour.delay_s = 1.0  # the request is in flight while the refund is asked
    token = await ecash.token(500, mint_url=mint.url)
    url = f"{node.url}/v1/chat/completions"
    request = asyncio.create_task(post(url, chat_body(PROMPT), {"X-Cashu": token}))
    for _ in range(400):  # until the node has forwarded the request (bounded)
        if upstream.requests:
            break
        await asyncio.sleep(0.01)
    assert upstream.requests
    during = await post(f"{node.url}/v1/wallet/refund", b"", {"X-Cashu": token})
    answer = await request
    assert answer.status == 200, answer.raw
    cost = int(answer.headers["X-Routstr-Cost-Msats"])
    change = answer.headers["X-Cashu"]
    after = await post(f"{node.url}/v1/wallet/refund", b"", {"X-Cashu": token})
    assert after.status == 200, after.raw

    # no sat is lost, however the change was split
    tokens = {change, after.body["cashu_token"]}
    if during.status == 200:
        tokens.add(during.body["cashu_token"])
    assert sum([await ecash.redeem(t) for t in tokens]) == change_sat(500, cost)
    await assert_balanced(node)

    # one payment, one change token, whenever it is asked for
    assert after.body == {"cashu_token": change, "amount": change_sat(500, cost)}
    if during.status == 200:
        assert during.body == after.body, (during.body, after.body)
    else:  # refused while the request runs: an error in the contract's envelope
        assert 400 <= during.status < 500, during.raw
        assert_error(during, during.status, during.body["error"]["code"])


async def test_every_answer_asked_for_is_reserved_and_charged(
    node: RunningNode, ecash: EcashFactory, mint: LocalMint
) -> None:
    """`n` answers (and `best_of` candidates) each may use max_tokens: all are reserved."""
    url = f"{node.url}/v1/chat/completions"
    three = chat_body(PROMPT, max_tokens=20, n=3)
    asked = await post(url, three)
    assert_error(asked, 402, "payment_required", "insufficient_quota")
    needed = PaymentRequest.deserialize(asked.headers["X-Cashu"]).a
    assert needed == math.ceil(reservation_of(three, 3 * 20) / 1000)
    best_of = b'{"model": "test-model", "prompt": "hi", "max_tokens": 20, "best_of": 4, "n": 2}'
    asked = await post(f"{node.url}/v1/completions", best_of)
    assert PaymentRequest.deserialize(asked.headers["X-Cashu"]).a == math.ceil(
        reservation_of(best_of, 4 * 20) / 1000
    )

    token = await ecash.token(500, mint_url=mint.url)
    paid = await post(url, three, {"X-Cashu": token})
    assert paid.status == 200, paid.raw
    assert [c["message"]["content"] for c in paid.body["choices"]] == [REPLY] * 3
    expected = cost_of(count_tokens(PROMPT), 3 * count_tokens(REPLY))
    assert paid.headers["X-Routstr-Cost-Msats"] == str(expected)
    assert await ecash.redeem(paid.headers["X-Cashu"]) == change_sat(500, expected)

    key = {"Authorization": f"Bearer {await ecash.token(500, mint_url=mint.url)}"}
    status, _, events, raw = await stream_post(
        url, chat_body(PROMPT, max_tokens=20, n=2, stream=True), key
    )
    assert status == 200, raw
    final = [e.json for e in events if e.data != "[DONE]"][-1]
    expected = cost_of(count_tokens(PROMPT), 2 * count_tokens(REPLY))
    assert final["usage"]["cost"]["total_msats"] == expected

    refused = await ecash.token(500, mint_url=mint.url)
    for bad in (0, -1, 129, "2", 1.5, True):
        answer = await post(url, chat_body(PROMPT, n=bad), {"X-Cashu": refused})
        assert_error(answer, 400, "invalid_n", "invalid_request_error")
        assert answer.body["error"]["param"] == "n"
    assert not await ecash.is_spent(refused)
    await assert_balanced(node)


async def test_the_upstream_is_held_to_the_output_that_was_reserved(
    node: RunningNode, upstream: RunningUpstream, ecash: EcashFactory, mint: LocalMint
) -> None:
    """The node charges at most what it reserved, so the upstream may write no more."""
    key = {"Authorization": f"Bearer {await ecash.token(3000, mint_url=mint.url)}"}
    chat = f"{node.url}/v1/chat/completions"
    upstream.behaviour.reply_words = 200  # a model that would go on well past 50 tokens

    # no cap in the request: the model's 50 are reserved and sent under chat's own name
    answer = await post(chat, chat_body(PROMPT), key)
    assert answer.status == 200, answer.raw
    assert upstream.requests[-1].json["max_completion_tokens"] == 50
    assert answer.body["usage"]["completion_tokens"] == 50
    expected = cost_of(count_tokens(PROMPT), 50)
    assert answer.headers["X-Routstr-Cost-Msats"] == str(expected)  # the real cost, not a cap

    # the client's own cap goes as it came
    answer = await post(chat, chat_body(PROMPT, max_tokens=7), key)
    assert answer.body["usage"]["completion_tokens"] == 7
    assert "max_completion_tokens" not in upstream.requests[-1].json

    # another endpoint's name bounds nothing upstream: the model's cap is reserved and sent
    foreign = chat_body(PROMPT, max_output_tokens=1)
    unpaid = await post(chat, foreign)
    assert PaymentRequest.deserialize(unpaid.headers["X-Cashu"]).a == math.ceil(
        reservation_of(foreign, 50) / 1000
    )
    answer = await post(chat, foreign, key)
    assert answer.body["usage"]["completion_tokens"] == 50
    assert upstream.requests[-1].json["max_completion_tokens"] == 50

    # the Responses API's cap is max_output_tokens, the legacy completions' max_tokens
    responses = b'{"model": "test-model", "input": "hello there friend", "max_tokens": 1}'
    answer = await post(f"{node.url}/v1/responses", responses, key)
    assert answer.status == 200, answer.raw
    assert upstream.requests[-1].json["max_output_tokens"] == 50
    answer = await post(
        f"{node.url}/v1/completions", b'{"model": "test-model", "prompt": "hi"}', key
    )
    assert answer.status == 200, answer.raw
    assert upstream.requests[-1].json["max_tokens"] == 50

    # an upstream that does not know the name gets the request as the client sent it
    upstream.behaviour.unknown_params = ["max_completion_tokens"]
    for stream in (False, True):
        before = len(upstream.requests)
        if stream:
            status, _, _, raw = await stream_post(chat, chat_body(PROMPT, stream=True), key)
            assert status == 200, raw
        else:
            answer = await post(chat, chat_body(PROMPT), key)
            assert answer.status == 200, answer.raw
        tried, sent = upstream.requests[before:]
        assert tried.json["max_completion_tokens"] == 50
        assert "max_completion_tokens" not in sent.json
    # the client's own use of it is the client's: refused as the upstream refuses it
    refused = await post(chat, chat_body(PROMPT, max_completion_tokens=5), key)
    assert refused.status == 400, refused.raw
    assert "max_completion_tokens" in refused.body["error"]["message"]
    upstream.behaviour.unknown_params = []

    # every prompt of a list gets its own answer, each up to the cap
    three = b'{"model": "test-model", "prompt": ["a", "b", "c"], "max_tokens": 5}'
    unpaid = await post(f"{node.url}/v1/completions", three)
    assert PaymentRequest.deserialize(unpaid.headers["X-Cashu"]).a == math.ceil(
        reservation_of(three, 3 * 5) / 1000
    )
    await assert_balanced(node)


async def test_a_web_page_may_call_the_api_and_read_the_money_headers(
    node: RunningNode, ecash: EcashFactory, mint: LocalMint
) -> None:
    """CORS: a browser wallet pays with ecash from any origin (no cookies are involved)."""
    url = f"{node.url}/v1/chat/completions"
    asked = "authorization, content-type, x-cashu, x-stainless-os"
    async with (
        aiohttp.ClientSession() as session,
        session.options(
            url,
            headers={
                "Origin": "https://chat.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": asked,
            },
        ) as preflight,
    ):
        assert preflight.status == 204
        assert preflight.headers["Access-Control-Allow-Origin"] == "*"
        assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
        assert preflight.headers["Access-Control-Allow-Headers"] == asked
        assert "X-RateLimit-Remaining" not in preflight.headers  # not a request: not counted
    origin = {"Origin": "https://chat.example"}
    token = await ecash.token(300, mint_url=mint.url)
    for body in (chat_body(PROMPT, max_tokens=5), chat_body(PROMPT, max_tokens=5, stream=True)):
        paid = await post(url, body, {**origin, "X-Cashu": token})
        assert paid.status == 200, paid.raw
        assert paid.headers["Access-Control-Allow-Origin"] == "*"
        exposed = {h.strip() for h in paid.headers["Access-Control-Expose-Headers"].split(",")}
        assert {"X-Cashu", "X-Routstr-Cost-Msats", "X-Request-Id", "X-Should-Retry"} <= exposed
        token = paid.headers.get("X-Cashu") or parse_stream_change(paid.raw)
    unpaid = await post(url, chat_body(PROMPT), origin)
    assert unpaid.status == 402
    assert unpaid.headers["Access-Control-Allow-Origin"] == "*"  # errors are readable too


def parse_stream_change(raw: bytes) -> str:
    events = [e.json for e in parse_sse(raw) if e.data != "[DONE]"]
    change: str = events[-1]["cashu_change"]
    return change
