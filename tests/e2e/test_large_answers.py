"""Large answers: a batch of embeddings is tens of MB and is charged like any other.

Answers over a quarter MB are parsed and rewritten off the event loop; what the client
gets is the same answer with ``usage.cost`` added.
"""

from __future__ import annotations

import json

from support.e2e import SdkFactory, assert_balanced, assert_error, post, token_account
from support.ecash import EcashFactory
from support.node import RunningNode

from routstr_node.demo.mint import LocalMint
from routstr_node.demo.upstream import count_tokens

INPUT_MSAT = 1000  # test-model's price of a prompt token


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
