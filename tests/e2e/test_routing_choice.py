"""Choosing a provider, end to end (CONTRACT §9): the default order, suffixes, the
`provider` object and its errors, what is reserved and charged, and the listings.

One node for the module, in front of three fake providers that all answer: nothing
here fails over, so what one test leaves behind (the measured speed) changes no other
test's route. Failover and health: test_routing_failover.py.
"""

from __future__ import annotations

import json
import math
from typing import Any

import openai
import pytest
from cashu.core.nuts.nut18 import PaymentRequest
from support.e2e import (
    SdkFactory,
    assert_balanced,
    assert_error,
    get,
    parse_sse,
    post,
    wait_until_settled,
)
from support.ecash import EcashFactory
from support.node import RunningNode
from support.routing import (
    CHAIN,
    ROUTED,
    Providers,
    cost_at,
    most_at,
    reply_cost,
)

from routstr_node.demo.mint import LocalMint

PROMPT = "which provider answers"
MESSAGES = [{"role": "user", "content": PROMPT}]


def chat(model: str = ROUTED, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": MESSAGES} | extra


async def paid_post(
    node: RunningNode, ecash: EcashFactory, mint: LocalMint, body: dict[str, Any], sat: int = 100
) -> tuple[Any, str]:
    """``body`` paid with a fresh X-Cashu token of ``sat``; (the answer, the token)."""
    token = await ecash.token(sat, mint_url=mint.url)
    answer = await post(f"{node.url}/v1/chat/completions", body, {"X-Cashu": token})
    return answer, token


def forwarded(providers: Providers, name: str) -> dict[str, Any]:
    """The one body provider ``name`` received."""
    (request,) = providers.by_name(name).requests
    body: dict[str, Any] = request.json
    return body


async def test_the_first_provider_answers_names_itself_and_charges_its_own_price(
    shared_routing_node: RunningNode,
    providers: Providers,
    ecash: EcashFactory,
    mint: LocalMint,
    openai_sdk: SdkFactory,
) -> None:
    node = shared_routing_node
    token = await ecash.token(200, mint_url=mint.url)
    client = openai_sdk(node, x_cashu=token)
    raw = await client.chat.completions.with_raw_response.create(
        model=ROUTED,
        messages=MESSAGES,
        max_tokens=20,  # type: ignore[arg-type]
    )
    completion = raw.parse()
    assert raw.headers["X-Routstr-Provider"] == "a"
    assert completion.model == ROUTED  # the node's id, not the upstream's "a-model"
    assert completion.model_dump()["provider"] == "a"
    assert forwarded(providers, "a")["model"] == "a-model"
    assert providers.called() == ["a"]
    assert completion.usage is not None
    expected = cost_at("a", completion.usage.prompt_tokens, completion.usage.completion_tokens)
    assert expected == reply_cost("a", PROMPT)
    assert raw.headers["X-Routstr-Cost-Msats"] == str(expected)
    assert completion.model_dump()["usage"]["cost"]["total_msats"] == expected
    assert await ecash.redeem(raw.headers["X-Cashu"]) == (200_000 - expected) // 1000
    await assert_balanced(node)


async def test_floor_goes_to_the_cheapest_and_charges_there(
    shared_routing_node: RunningNode, providers: Providers, ecash: EcashFactory, mint: LocalMint
) -> None:
    answer, _ = await paid_post(shared_routing_node, ecash, mint, chat(f"{ROUTED}:floor"))
    assert answer.status == 200, answer.raw
    assert answer.headers["X-Routstr-Provider"] == "b"
    assert (answer.body["model"], answer.body["provider"]) == (ROUTED, "b")
    assert int(answer.headers["X-Routstr-Cost-Msats"]) == reply_cost("b", PROMPT)
    assert forwarded(providers, "b")["model"] == "b-model"


async def test_thinking_sends_the_provider_params_and_online_its_own_providers(
    shared_routing_node: RunningNode,
    providers: Providers,
    ecash: EcashFactory,
    mint: LocalMint,
    openai_sdk: SdkFactory,
) -> None:
    node = shared_routing_node
    client = openai_sdk(node, api_key=await ecash.token(300, mint_url=mint.url))
    thinking = await client.chat.completions.with_raw_response.create(
        model=f"{ROUTED}:thinking",
        messages=MESSAGES,
        temperature=0.9,  # type: ignore[arg-type]
    )
    assert thinking.headers["X-Routstr-Provider"] == "c"
    assert thinking.parse().model == ROUTED
    sent = forwarded(providers, "c")
    assert sent["model"] == ROUTED  # c's upstream_model defaults to the model id
    assert sent["reasoning_effort"] == "high"  # merged in
    assert sent["temperature"] == 0.9  # the client's own value wins
    providers.reset()
    online = await client.chat.completions.with_raw_response.create(
        model=f"{ROUTED}:online",
        messages=MESSAGES,  # type: ignore[arg-type]
    )
    assert online.headers["X-Routstr-Provider"] == "b"
    assert "reasoning_effort" not in forwarded(providers, "b")


@pytest.mark.parametrize(
    ("preferences", "expected"),
    [
        ({"order": ["c", "b"]}, "c"),
        ({"only": ["c", "b"]}, "b"),  # only filters, node.toml's order stays
        ({"ignore": ["a"]}, "b"),
        ({"sort": "price"}, "b"),
        ({"order": ["c"], "sort": "price"}, "c"),
        ({"data_collection": "deny"}, "b"),
        ({"zdr": True}, "b"),
        ({"allow_fallbacks": False, "order": ["c"]}, "c"),
        ({"require_parameters": True, "order": ["b"]}, "b"),  # b takes every parameter
        ({"sort": None, "only": None, "zdr": False}, "a"),  # null: not set
    ],
)
async def test_the_provider_object_chooses_and_is_never_forwarded(
    shared_routing_node: RunningNode,
    providers: Providers,
    ecash: EcashFactory,
    mint: LocalMint,
    openai_sdk: SdkFactory,
    preferences: dict[str, Any],
    expected: str,
) -> None:
    client = openai_sdk(shared_routing_node, x_cashu=await ecash.token(100, mint_url=mint.url))
    raw = await client.chat.completions.with_raw_response.create(
        model=ROUTED,
        messages=MESSAGES,  # type: ignore[arg-type]
        temperature=0.5,
        extra_body={"provider": preferences},
    )
    assert raw.headers["X-Routstr-Provider"] == expected
    assert providers.called() == [expected]
    assert "provider" not in forwarded(providers, expected)
    assert raw.parse().model_dump()["provider"] == expected


async def test_require_parameters_keeps_the_providers_that_take_them(
    shared_routing_node: RunningNode, providers: Providers, ecash: EcashFactory, mint: LocalMint
) -> None:
    body = chat(provider={"require_parameters": True}, temperature=0.1, max_tokens=10)
    answer, _ = await paid_post(shared_routing_node, ecash, mint, body)
    assert answer.headers["X-Routstr-Provider"] == "a"  # a lists both
    providers.reset()
    body = chat(provider={"require_parameters": True, "order": ["a"]}, tools=[], top_p=0.5)
    answer, _ = await paid_post(shared_routing_node, ecash, mint, body)
    assert answer.headers["X-Routstr-Provider"] == "b"  # a does not take top_p


async def test_no_provider_left_is_404_naming_the_filter_and_keeps_the_token(
    shared_routing_node: RunningNode, providers: Providers, ecash: EcashFactory, mint: LocalMint
) -> None:
    for preferences, named in (
        ({"only": ["a"], "zdr": True}, "zdr excluded a"),
        ({"ignore": ["a", "b", "c"]}, "ignore excluded a, b, c"),
        ({"only": ["gone"]}, "only excluded a, b, c"),  # gone is a provider, not of this model
        ({"data_collection": "deny", "ignore": ["b"]}, "data_collection excluded a, c"),
    ):
        answer, token = await paid_post(
            shared_routing_node, ecash, mint, chat(provider=preferences)
        )
        assert_error(answer, 404, "no_provider_available", "not_found_error")
        assert named in answer.body["error"]["message"], answer.body
        assert not await ecash.is_spent(token)
    assert providers.called() == []


@pytest.mark.parametrize(
    ("preferences", "param"),
    [
        ("a", "provider"),
        ([], "provider"),
        ({"order": "a"}, "provider.order"),
        ({"order": ["a", 1]}, "provider.order"),
        ({"order": ["a", "a"]}, "provider.order"),
        ({"only": []}, "provider.only"),
        ({"only": ["nowhere"]}, "provider.only"),
        ({"ignore": {"a": True}}, "provider.ignore"),
        ({"allow_fallbacks": "no"}, "provider.allow_fallbacks"),
        ({"sort": "fastest"}, "provider.sort"),
        ({"data_collection": True}, "provider.data_collection"),
        ({"zdr": "true"}, "provider.zdr"),
        ({"require_parameters": 1}, "provider.require_parameters"),
        ({"max_price": {"prompt": 1}}, "provider.max_price"),
    ],
)
async def test_a_malformed_provider_object_is_400_and_moves_no_money(
    shared_routing_node: RunningNode,
    providers: Providers,
    ecash: EcashFactory,
    mint: LocalMint,
    preferences: Any,
    param: str,
) -> None:
    answer, token = await paid_post(shared_routing_node, ecash, mint, chat(provider=preferences))
    assert_error(answer, 400, "invalid_provider", "invalid_request_error")
    assert answer.body["error"]["param"] == param
    assert "X-Cashu" not in answer.headers
    assert not await ecash.is_spent(token)  # refused before it was redeemed
    assert providers.called() == []


async def test_the_sdk_sees_a_bad_provider_object_as_a_bad_request(
    shared_routing_node: RunningNode, openai_sdk: SdkFactory
) -> None:
    client = openai_sdk(shared_routing_node, api_key="sk-no-such-key")
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(
            model=ROUTED,
            messages=MESSAGES,  # type: ignore[arg-type]
            extra_body={"provider": {"sort": "random"}},
        )
    assert caught.value.code == "invalid_provider"


async def test_unknown_suffixes_and_unserved_variants_are_404(
    shared_routing_node: RunningNode, ecash: EcashFactory, mint: LocalMint
) -> None:
    for model in (f"{ROUTED}:free", f"{ROUTED}:", f"{CHAIN}:online", f"{CHAIN}:thinking"):
        answer, token = await paid_post(shared_routing_node, ecash, mint, chat(model))
        assert_error(answer, 404, "model_not_available", "not_found_error")
        assert not await ecash.is_spent(token)


async def test_the_402_asks_for_the_most_at_any_provider_that_may_be_tried(
    shared_routing_node: RunningNode,
) -> None:
    url = f"{shared_routing_node.url}/v1/chat/completions"

    async def asked_sat(body: dict[str, Any]) -> int:
        answer = await post(url, body)
        assert_error(answer, 402, "payment_required", "insufficient_quota")
        amount: int = PaymentRequest.deserialize(answer.headers["X-Cashu"]).a
        return amount

    def sat_at(provider: str, body: dict[str, Any]) -> int:
        return math.ceil(most_at(provider, len(json.dumps(body).encode())) / 1000)

    long = [{"role": "user", "content": "word " * 600}]  # 3000 bytes: the prices tell apart
    body = chat(messages=long)
    assert await asked_sat(body) == sat_at("a", body) == 10  # a is the dearest
    only_b = chat(messages=long, provider={"order": ["b"], "allow_fallbacks": False})
    assert await asked_sat(only_b) == sat_at("b", only_b) == 4
    cheaper = chat(messages=long, provider={"ignore": ["a"]})
    assert await asked_sat(cheaper) == sat_at("c", cheaper) == 7


async def test_a_stream_names_the_model_in_every_event_and_the_provider_at_the_end(
    shared_routing_node: RunningNode,
    providers: Providers,
    ecash: EcashFactory,
    mint: LocalMint,
    openai_sdk: SdkFactory,
) -> None:
    node = shared_routing_node
    token = await ecash.token(100, mint_url=mint.url)
    client = openai_sdk(node, x_cashu=token)
    stream = await client.chat.completions.create(
        model=f"{ROUTED}:floor",
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
    )
    chunks = [chunk async for chunk in stream]
    assert {chunk.model for chunk in chunks} == {ROUTED}
    final = chunks[-1].model_dump()
    assert final["choices"] == [] and final["provider"] == "b"
    expected = reply_cost("b", PROMPT)
    assert final["usage"]["cost"]["total_msats"] == expected
    assert await ecash.redeem(final["cashu_change"]) == (100_000 - expected) // 1000
    # the same stream as raw events: the provider's header, its model name never shows
    answer, _ = await paid_post(node, ecash, mint, chat(f"{ROUTED}:floor", stream=True))
    assert answer.headers["X-Routstr-Provider"] == "b"
    assert "b-model" not in answer.raw.decode()
    events = [e.json for e in parse_sse(answer.raw) if e.data != "[DONE]"]
    assert all(e["model"] == ROUTED for e in events)
    await wait_until_settled(node)
    await assert_balanced(node)


async def test_models_list_each_provider_with_its_price_and_status(
    shared_routing_node: RunningNode,
) -> None:
    listed = (await get(f"{shared_routing_node.url}/v1/models")).body["data"]
    routed = next(m for m in listed if m["id"] == ROUTED)
    assert routed["display_name"] == "Routed Model"
    assert routed["category"] == "chat"
    assert routed["capabilities"] == ["chat", "tools"]
    assert routed["owned_by"] == "a"
    assert [p["name"] for p in routed["providers"]] == ["a", "b", "c"]
    by_name = {p["name"]: p for p in routed["providers"]}
    assert by_name["b"]["data_collection"] == "deny" and by_name["b"]["zdr"] is True
    assert by_name["a"]["data_collection"] == "allow" and by_name["a"]["zdr"] is False
    assert {p["status"] for p in routed["providers"]} == {"active"}
    for name, provider in by_name.items():
        per_in, per_out = cost_at(name, 1, 0), cost_at(name, 0, 1)
        assert provider["pricing"]["prompt"] == per_in  # sat per 1k tokens = msat per token
        assert provider["sats_pricing"]["completion"] == per_out / 1000
    assert routed["pricing"] == by_name["a"]["pricing"]  # the first in the default order
    most = max(p["sats_pricing"]["max_cost"] for p in routed["providers"])
    assert routed["sats_pricing"]["max_cost"] == most == by_name["a"]["sats_pricing"]["max_cost"]
    chain = next(m for m in listed if m["id"] == CHAIN)
    assert chain["display_name"] == CHAIN and chain["capabilities"] == []


async def test_a_provider_lists_its_models_at_its_own_price(
    shared_routing_node: RunningNode, ecash: EcashFactory, mint: LocalMint
) -> None:
    node = shared_routing_node
    listed = (await get(f"{node.url}/v1/providers")).body["providers"]
    models = {p["name"]: p["models"] for p in listed}
    assert models["b"] == [ROUTED, CHAIN] and models["gone"] == [CHAIN]
    answer, _ = await paid_post(node, ecash, mint, chat(provider={"only": ["c"]}))
    assert answer.status == 200
    one = (await get(f"{node.url}/v1/providers/c")).body
    assert [m["id"] for m in one["models"]] == [ROUTED, CHAIN]
    assert one["models"][0]["name"] == "Routed Model"
    assert one["models"][0]["pricing"]["prompt"] == cost_at("c", 1, 0)
    assert isinstance(one["latency_ms"], int) and one["latency_ms"] >= 0
    assert one["throughput_tps"] > 0
    never = (await get(f"{node.url}/v1/providers/gone")).body
    assert (never["latency_ms"], never["throughput_tps"]) == (None, None)
