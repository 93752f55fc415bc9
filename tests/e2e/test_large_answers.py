"""Large bodies: a request with an inline image, a batch of embeddings (tens of MB).

Bodies over a quarter MB are parsed and rewritten off the event loop; what the upstream
and the client get is the same as for small ones.
"""

from __future__ import annotations

import json

from support.e2e import (
    INPUT_MSAT,
    OUTPUT_MSAT,
    SdkFactory,
    assert_balanced,
    assert_error,
    post,
    token_account,
)
from support.ecash import EcashFactory
from support.node import RunningNode

from routstr_node.demo.mint import LocalMint
from routstr_node.demo.upstream import IMAGE_TOKENS, RunningUpstream, count_tokens


async def test_a_batch_of_embeddings_over_the_threshold_is_answered_and_charged(
    node: RunningNode, ecash: EcashFactory, mint: LocalMint, openai_sdk: SdkFactory
) -> None:
    token = await ecash.token(2000, mint_url=mint.url)
    client = openai_sdk(node, api_key=token)
    inputs = [f"input number {i} of the batch" for i in range(60)]

    raw = await client.embeddings.with_raw_response.create(
        model="test-model", input=inputs, dimensions=3072
    )
    answer = raw.parse()
    assert len(raw.content) > 256 * 1024  # base64 vectors: ~1 MB
    assert [e.index for e in answer.data] == list(range(60))
    assert {len(e.embedding) for e in answer.data} == {3072}
    tokens = sum(count_tokens(text) for text in inputs)
    assert answer.usage.prompt_tokens == tokens
    assert raw.headers["X-Routstr-Cost-Msats"] == str(tokens * INPUT_MSAT)
    assert answer.model_dump()["usage"]["cost"]["total_msats"] == tokens * INPUT_MSAT
    account = token_account(node, token)
    assert account is not None
    assert account.balance_msat == 2000 * 1000 - tokens * INPUT_MSAT
    await assert_balanced(node)


async def test_dimensions_the_upstream_refuses_cost_nothing(
    node: RunningNode, ecash: EcashFactory, mint: LocalMint
) -> None:
    token = await ecash.token(100, mint_url=mint.url)
    body = json.dumps({"model": "test-model", "input": "hi", "dimensions": 100_000_000})
    answer = await post(f"{node.url}/v1/embeddings", body.encode(), {"X-Cashu": token})
    assert_error(answer, 400, "invalid_value", "invalid_request_error")
    assert answer.body["error"]["param"] == "dimensions"
    assert await ecash.redeem(answer.headers["X-Cashu"]) == 100
    await assert_balanced(node)


async def test_a_request_with_a_large_inline_image_is_forwarded_whole_and_charged(
    node: RunningNode, upstream: RunningUpstream, ecash: EcashFactory, mint: LocalMint
) -> None:
    image = "data:image/png;base64," + "A" * 1_000_000
    parts = [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": image}},
    ]
    body = {
        "model": "test-model",
        "messages": [{"role": "user", "content": parts}],
        "max_tokens": 10,
    }
    token = await ecash.token(6000, mint_url=mint.url)
    answer = await post(
        f"{node.url}/v1/chat/completions", json.dumps(body).encode(), {"X-Cashu": token}
    )
    assert answer.status == 200, answer.raw
    sent = upstream.requests[-1].json
    assert sent["model"] == "fake-upstream-model"  # renamed: the body was encoded again
    assert sent["messages"] == body["messages"]
    expected = (3 + IMAGE_TOKENS) * INPUT_MSAT + answer.body["usage"][
        "completion_tokens"
    ] * OUTPUT_MSAT
    assert answer.headers["X-Routstr-Cost-Msats"] == str(expected)
    assert await ecash.redeem(answer.headers["X-Cashu"]) == (6000 * 1000 - expected) // 1000
    await assert_balanced(node)
