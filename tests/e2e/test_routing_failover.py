"""Failover, health and measured speed, end to end (CONTRACT §9), with three fake
providers that fail the ways real ones do: refused connections, 500, 429, a hang, a
stream cut before or after its first byte, slow tokens.

Each test has a fresh node: what one provider's failures leave behind (its `down`
state, its measured speed) is what these tests look at.
"""

from __future__ import annotations

from typing import Any

import openai
import pytest
from support.e2e import (
    SdkFactory,
    assert_balanced,
    assert_error,
    chat_text,
    get,
    parse_sse,
    post,
    reservations,
    wait_until_settled,
)
from support.ecash import EcashFactory
from support.node import RunningNode
from support.routing import CHAIN, ROUTED, Providers, cost_at, reply_cost

from routstr_node.demo.mint import LocalMint
from routstr_node.routing import DOWN_AFTER_FAILURES

PROMPT = "fail over to someone"
MESSAGES = [{"role": "user", "content": PROMPT}]


def chat(model: str = ROUTED, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": MESSAGES} | extra


def change_sat(token_sat: int, cost_msat: int) -> int:
    return (token_sat * 1000 - cost_msat) // 1000


def metric(text: str, name: str, provider: str) -> int:
    prefix = f'{name}{{provider="{provider}"}} '
    line = next((x for x in text.splitlines() if x.startswith(prefix)), prefix + "0")
    return int(line.removeprefix(prefix))


async def test_a_plain_request_fails_over_until_a_provider_answers(
    routing_node: RunningNode,
    providers: Providers,
    ecash: EcashFactory,
    mint: LocalMint,
    openai_sdk: SdkFactory,
) -> None:
    """gone refuses the connection, a answers 500, b 429: c answers and is paid."""
    providers.a.behaviour.fail_status = 500
    providers.b.behaviour.fail_status = 429
    token = await ecash.token(300, mint_url=mint.url)
    client = openai_sdk(routing_node, x_cashu=token)
    raw = await client.chat.completions.with_raw_response.create(
        model=CHAIN,
        messages=MESSAGES,  # type: ignore[arg-type]
    )
    completion = raw.parse()
    assert raw.headers["X-Routstr-Provider"] == "c"
    assert (completion.model, completion.model_dump()["provider"]) == (CHAIN, "c")
    assert providers.called() == ["a", "b", "c"]  # each tried once, in order
    expected = reply_cost("c", PROMPT)  # the failed attempts cost nothing
    assert raw.headers["X-Routstr-Cost-Msats"] == str(expected)
    assert await ecash.redeem(raw.headers["X-Cashu"]) == change_sat(300, expected)
    (reservation,) = reservations(routing_node)
    assert reservation[1:] == ("charged", expected)
    assert reservation[0] > 50 * cost_at("gone", 0, 1)  # the most at gone, the dearest
    metrics = (await get(f"{routing_node.url}/metrics")).raw.decode()
    for name, attempts, failures, failovers in (
        ("gone", 1, 1, 1),
        ("a", 1, 1, 1),
        ("b", 1, 1, 1),
        ("c", 1, 0, 0),
    ):
        assert metric(metrics, "routstr_provider_attempts_total", name) == attempts
        assert metric(metrics, "routstr_provider_failures_total", name) == failures
        assert metric(metrics, "routstr_provider_failovers_total", name) == failovers
    await assert_balanced(routing_node)


async def test_a_stream_fails_over_a_hang_and_a_500_before_its_first_byte(
    routing_node: RunningNode,
    providers: Providers,
    ecash: EcashFactory,
    mint: LocalMint,
    openai_sdk: SdkFactory,
) -> None:
    providers.a.behaviour.delay_s = 30  # longer than the provider's timeout_s
    providers.b.behaviour.fail_status = 503
    providers.c.behaviour.chunk_delay_s = 0.01  # slow tokens: still the answer
    token = await ecash.token(200, mint_url=mint.url)
    client = openai_sdk(routing_node, x_cashu=token)
    stream = await client.chat.completions.create(
        model=ROUTED,
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
    )
    chunks = [chunk async for chunk in stream]
    assert {chunk.model for chunk in chunks} == {ROUTED}
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"Echo: {PROMPT}"
    final = chunks[-1].model_dump()
    assert final["provider"] == "c"
    expected = reply_cost("c", PROMPT)
    assert final["usage"]["cost"]["total_msats"] == expected
    assert await ecash.redeem(final["cashu_change"]) == change_sat(200, expected)
    assert providers.called() == ["a", "b", "c"]
    await wait_until_settled(routing_node)
    await assert_balanced(routing_node)


async def test_a_stream_cut_before_its_first_byte_fails_over(
    routing_node: RunningNode, providers: Providers, ecash: EcashFactory, mint: LocalMint
) -> None:
    providers.a.behaviour.cut_after_chunks = 0  # the answer's head, then nothing
    token = await ecash.token(100, mint_url=mint.url)
    url = f"{routing_node.url}/v1/chat/completions"
    answer = await post(url, chat(stream=True), {"X-Cashu": token})
    assert answer.status == 200 and answer.headers["X-Routstr-Provider"] == "b"
    events = parse_sse(answer.raw)
    assert chat_text(events) == f"Echo: {PROMPT}"
    assert events[-2].json["provider"] == "b"
    assert events[-2].json["usage"]["cost"]["total_msats"] == reply_cost("b", PROMPT)


async def test_a_stream_cut_after_its_first_byte_is_not_retried(
    routing_node: RunningNode, providers: Providers, ecash: EcashFactory, mint: LocalMint
) -> None:
    providers.a.behaviour.cut_after_chunks = 2  # the role and one word reach the client
    token = await ecash.token(100, mint_url=mint.url)
    url = f"{routing_node.url}/v1/chat/completions"
    answer = await post(url, chat(stream=True), {"X-Cashu": token})
    assert answer.status == 200 and answer.headers["X-Routstr-Provider"] == "a"
    events = parse_sse(answer.raw)
    assert events[-1].data == "[DONE]"
    error, final = events[-3].json, events[-2].json
    assert error["error"]["code"] == "upstream_error"
    assert providers.called() == ["a"]  # b and c never asked: the client had bytes
    delivered = chat_text(events)
    assert delivered == "Echo:"
    # no usage came: the node's own count of what was delivered, at a's price
    own_input = final["usage"]["prompt_tokens"]
    expected = cost_at("a", own_input, -(-len(delivered.encode()) // 4))
    assert final["usage"]["cost"]["total_msats"] == expected
    assert final["provider"] == "a" and final["model"] == ROUTED
    assert await ecash.redeem(final["cashu_change"]) == change_sat(100, expected)
    await wait_until_settled(routing_node)
    await assert_balanced(routing_node)


async def test_when_every_provider_fails_the_last_failure_is_answered_and_nothing_paid(
    routing_node: RunningNode,
    providers: Providers,
    ecash: EcashFactory,
    mint: LocalMint,
    openai_sdk: SdkFactory,
) -> None:
    for upstream in (providers.a, providers.b):
        upstream.behaviour.fail_status = 500
    providers.c.behaviour.delay_s = 30
    token = await ecash.token(50, mint_url=mint.url)
    answer = await post(f"{routing_node.url}/v1/chat/completions", chat(), {"X-Cashu": token})
    assert_error(answer, 504, "upstream_timeout", "upstream_error")  # c's, the last
    assert answer.headers["X-Routstr-Provider"] == "c"
    assert answer.headers["X-Should-Retry"] == "false"
    assert await ecash.redeem(answer.headers["X-Cashu"]) == 50  # the whole token back
    providers.reset()
    providers.a.behaviour.fail_status = 500
    client = openai_sdk(routing_node, x_cashu=await ecash.token(50, mint_url=mint.url))
    with pytest.raises(openai.InternalServerError) as caught:  # 502: a's own failure
        await client.chat.completions.create(
            model=ROUTED,
            messages=MESSAGES,  # type: ignore[arg-type]
            extra_body={"provider": {"allow_fallbacks": False}},
        )
    assert caught.value.status_code == 502
    assert caught.value.response.headers["X-Routstr-Provider"] == "a"
    assert providers.called() == ["a"]
    await assert_balanced(routing_node)


async def test_a_client_error_is_the_clients_and_not_failed_over(
    routing_node: RunningNode, providers: Providers, ecash: EcashFactory, mint: LocalMint
) -> None:
    providers.a.behaviour.fail_status = 400
    token = await ecash.token(50, mint_url=mint.url)
    answer = await post(f"{routing_node.url}/v1/chat/completions", chat(), {"X-Cashu": token})
    assert answer.status == 400
    assert providers.called() == ["a"]
    assert await ecash.redeem(answer.headers["X-Cashu"]) == 50


async def test_a_down_provider_is_listed_down_tried_last_and_back_after_an_answer(
    routing_node: RunningNode, providers: Providers, ecash: EcashFactory, mint: LocalMint
) -> None:
    key = {"Authorization": f"Bearer {await ecash.token(500, mint_url=mint.url)}"}
    url = f"{routing_node.url}/v1/chat/completions"
    providers.a.behaviour.fail_status = 502
    for _ in range(DOWN_AFTER_FAILURES):
        answer = await post(url, chat(), key)
        assert answer.headers["X-Routstr-Provider"] == "b"  # failed over every time
    assert len(providers.a.requests) == DOWN_AFTER_FAILURES
    listed = (await get(f"{routing_node.url}/v1/providers")).body["providers"]
    assert {p["name"]: p["status"] for p in listed}["a"] == "down"
    models = (await get(f"{routing_node.url}/v1/models")).body["data"]
    routed = next(m for m in models if m["id"] == ROUTED)
    assert [p["name"] for p in routed["providers"]] == ["b", "c", "a"]  # the default order
    assert [p["status"] for p in routed["providers"]] == ["active", "active", "down"]
    assert routed["owned_by"] == "b"
    providers.reset()
    answer = await post(url, chat(), key)
    assert answer.headers["X-Routstr-Provider"] == "b"
    assert providers.called() == ["b"]  # a is tried last now, and b answered
    answer = await post(url, chat(provider={"order": ["a"]}), key)  # the client's call
    assert answer.headers["X-Routstr-Provider"] == "a"
    assert (await get(f"{routing_node.url}/v1/providers/a")).body["status"] == "active"


async def test_nitro_follows_the_measured_throughput(
    routing_node: RunningNode, providers: Providers, ecash: EcashFactory, mint: LocalMint
) -> None:
    key = {"Authorization": f"Bearer {await ecash.token(500, mint_url=mint.url)}"}
    url = f"{routing_node.url}/v1/chat/completions"
    for name in "abc":
        one = (await get(f"{routing_node.url}/v1/providers/{name}")).body
        assert (one["latency_ms"], one["throughput_tps"]) == (None, None)
    nitro = await post(url, chat(f"{ROUTED}:nitro"), key)
    assert nitro.headers["X-Routstr-Provider"] == "a"  # nothing measured: node.toml's order
    long = [{"role": "user", "content": "one two three four five six seven eight"}]
    providers.a.behaviour.chunk_delay_s = 0.05  # a writes slowly, b and c at once
    for name in "abc":
        body = chat(messages=long, stream=True, provider={"only": [name]})
        assert (await post(url, body, key)).headers["X-Routstr-Provider"] == name
    speeds = {
        name: (await get(f"{routing_node.url}/v1/providers/{name}")).body["throughput_tps"]
        for name in "abc"
    }
    assert all(isinstance(tps, float | int) and tps > 0 for tps in speeds.values()), speeds
    fastest = max("bc", key=lambda n: speeds[n])
    providers.reset()
    nitro = await post(url, chat(f"{ROUTED}:nitro"), key)
    assert nitro.headers["X-Routstr-Provider"] == fastest
    assert providers.called() == [fastest]
    slowest = await post(url, chat(provider={"sort": "throughput", "ignore": ["b", "c"]}), key)
    assert slowest.headers["X-Routstr-Provider"] == "a"


async def test_a_mixed_run_keeps_the_audit_balanced(
    routing_node: RunningNode, providers: Providers, ecash: EcashFactory, mint: LocalMint
) -> None:
    """Every payment mode, plain and streamed, answered, failed over, cut and refused."""
    url = f"{routing_node.url}/v1/chat/completions"
    key_token = await ecash.token(400, mint_url=mint.url)
    created = await post(
        f"{routing_node.url}/v1/wallet/create",
        {"cashu_token": await ecash.token(400, mint_url=mint.url)},
    )
    payers = [
        lambda: ecash.token(60, mint_url=mint.url),  # X-Cashu, a new token each time
        lambda: _const(key_token),  # a token as the key
        lambda: _const(created.body["api_key"]),  # an sk- account
    ]
    runs = [
        ({}, chat()),
        ({"a": {"fail_status": 500}}, chat(stream=True)),
        ({"a": {"cut_after_chunks": 2}}, chat(stream=True)),
        ({"a": {"fail_status": 429}, "b": {"fail_status": 500}}, chat(CHAIN)),
        ({"b": {"cut_after_chunks": 0}}, chat(f"{ROUTED}:floor", stream=True)),
        ({"a": {"fail_status": 500}, "b": {"fail_status": 500}, "c": {"fail_status": 500}}, chat()),
        ({}, chat(provider={"only": []})),
    ]
    for index, payer in enumerate(payers):
        for knobs, body in runs:
            providers.reset()
            for name, settings in knobs.items():
                for knob, value in settings.items():
                    setattr(providers.by_name(name).behaviour, knob, value)
            credential = await payer()
            header = (
                {"X-Cashu": credential} if index == 0 else {"Authorization": f"Bearer {credential}"}
            )
            answer = await post(url, body, header)
            assert answer.status in (200, 400, 502), answer.raw
            if index == 0 and answer.status != 400:
                change = answer.headers.get("X-Cashu")
                if change is None:
                    final = parse_sse(answer.raw)[-2].json
                    change = final["cashu_change"]
                assert await ecash.redeem(change) > 0
    await wait_until_settled(routing_node)
    await assert_balanced(routing_node)


async def _const(value: str) -> str:
    return value
