"""The OpenAI SDK's stream helpers build their final object through the node.

``responses.stream`` and ``chat.completions.stream`` accumulate events into the final
response; the node's extra usage event (CONTRACT §3) must not break them, and the
cost must reach the final object's usage.
"""

from __future__ import annotations

from support.e2e import SdkFactory, assert_balanced, cost_of, token_account
from support.ecash import EcashFactory
from support.node import RunningNode

from routstr_node.demo.mint import LocalMint


async def test_stream_helpers_end_with_the_answer_and_its_cost(
    node: RunningNode, ecash: EcashFactory, mint: LocalMint, openai_sdk: SdkFactory
) -> None:
    token = await ecash.token(2000, mint_url=mint.url)
    client = openai_sdk(node, api_key=token)

    async with client.responses.stream(
        model="test-model", input="cyan magenta", max_output_tokens=10
    ) as responses:
        deltas = [e.delta async for e in responses if e.type == "response.output_text.delta"]
        response = await responses.get_final_response()
    assert "".join(deltas) == response.output_text == "Echo: cyan magenta"
    assert response.usage is not None
    first = cost_of(response.usage.input_tokens, response.usage.output_tokens)
    assert response.usage.model_dump()["cost"]["total_msats"] == first

    async with client.chat.completions.stream(
        model="test-model", messages=[{"role": "user", "content": "hi there"}], max_tokens=10
    ) as chat:
        async for _ in chat:
            pass
        completion = await chat.get_final_completion()
    assert completion.choices[0].message.content == "Echo: hi there"
    assert completion.usage is not None
    second = cost_of(completion.usage.prompt_tokens, completion.usage.completion_tokens)
    assert completion.usage.model_dump()["cost"]["total_msats"] == second

    account = token_account(node, token)
    assert account is not None
    assert account.balance_msat == 2000 * 1000 - first - second
    await assert_balanced(node)
