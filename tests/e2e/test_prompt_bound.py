"""What the upstream bills beyond the request's bytes is reserved for (CONTRACT §3).

An image (behind a URL or inline), a stored response or a file is hundreds of prompt
tokens in a few bytes: the reservation for such a request is bounded by the model's context
length, so the upstream's usage is charged in full and never capped at a reservation
that was too small for it.
"""

from __future__ import annotations

import json
import math

from cashu.core.nuts.nut18 import PaymentRequest
from support.e2e import (
    CONTEXT_LENGTH,
    INPUT_MSAT,
    OUTPUT_MSAT,
    assert_balanced,
    assert_error,
    cost_of,
    post,
    reservations,
)
from support.ecash import EcashFactory
from support.node import RunningNode

from routstr_node.demo.mint import LocalMint
from routstr_node.demo.upstream import IMAGE_TOKENS, count_tokens

PROMPT = "what is in this picture"
IMAGE_URL = "https://example.com/cat.png"


def image_chat(max_tokens: int = 10) -> bytes:
    content = [
        {"type": "text", "text": PROMPT},
        {"type": "image_url", "image_url": {"url": IMAGE_URL}},
    ]
    body = {
        "model": "test-model",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
    }
    return json.dumps(body).encode()


async def test_an_image_behind_a_url_is_reserved_for_and_charged_in_full(
    node: RunningNode, ecash: EcashFactory, mint: LocalMint
) -> None:
    url = f"{node.url}/v1/chat/completions"
    body = image_chat()
    whole_context = CONTEXT_LENGTH * INPUT_MSAT + 10 * OUTPUT_MSAT
    assert len(body) * INPUT_MSAT < whole_context  # the bytes alone would bound it lower

    small = await ecash.token(300, mint_url=mint.url)
    refused = await post(url, body, {"X-Cashu": small})
    assert_error(refused, 402, "payment_required", "insufficient_quota")
    assert PaymentRequest.deserialize(refused.headers["X-Cashu"]).a == math.ceil(
        whole_context / 1000
    )
    assert not await ecash.is_spent(small)

    key = {"Authorization": f"Bearer {await ecash.token(6000, mint_url=mint.url)}"}
    paid = await post(url, body, key)
    assert paid.status == 200, paid.raw
    expected = cost_of(count_tokens(PROMPT) + IMAGE_TOKENS, paid.body["usage"]["completion_tokens"])
    assert paid.body["usage"]["prompt_tokens"] == count_tokens(PROMPT) + IMAGE_TOKENS
    assert paid.headers["X-Routstr-Cost-Msats"] == str(expected)
    assert reservations(node)[-1] == (whole_context, "charged", expected)
    await assert_balanced(node)


async def test_an_inline_image_is_reserved_for_up_to_the_context_too(
    node: RunningNode, ecash: EcashFactory, mint: LocalMint
) -> None:
    """A tiny inline image is billed far more tokens than its bytes."""
    inline = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    body = json.dumps(
        {
            "model": "test-model",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, inline]}],
            "max_tokens": 10,
        }
    ).encode()
    key = {"Authorization": f"Bearer {await ecash.token(6000, mint_url=mint.url)}"}
    paid = await post(f"{node.url}/v1/chat/completions", body, key)
    assert paid.status == 200, paid.raw
    expected = cost_of(1 + IMAGE_TOKENS, paid.body["usage"]["completion_tokens"])
    assert len(body) < IMAGE_TOKENS  # its bytes would have bounded the prompt below that
    assert paid.headers["X-Routstr-Cost-Msats"] == str(expected)
    whole_context = CONTEXT_LENGTH * INPUT_MSAT + 10 * OUTPUT_MSAT
    assert reservations(node)[-1] == (whole_context, "charged", expected)


async def test_a_stored_response_is_reserved_for_up_to_the_context(
    node: RunningNode, ecash: EcashFactory, mint: LocalMint
) -> None:
    body = json.dumps(
        {
            "model": "test-model",
            "input": "and then?",
            "previous_response_id": "resp_abc",
            "max_output_tokens": 10,
        }
    ).encode()
    small = await ecash.token(300, mint_url=mint.url)
    refused = await post(f"{node.url}/v1/responses", body, {"X-Cashu": small})
    assert_error(refused, 402, "payment_required", "insufficient_quota")
    assert PaymentRequest.deserialize(refused.headers["X-Cashu"]).a == math.ceil(
        (CONTEXT_LENGTH * INPUT_MSAT + 10 * OUTPUT_MSAT) / 1000
    )
    assert not await ecash.is_spent(small)


async def test_inputs_billed_apart_may_each_fill_the_context(
    node: RunningNode, ecash: EcashFactory, mint: LocalMint
) -> None:
    """An embeddings list or a completions prompt list is billed per input: together
    they may go well past one context length, and are charged in full."""
    inputs = [" ".join(f"w{i}x{j}" for j in range(3000)) for i in range(4)]  # 12,000 words
    assert CONTEXT_LENGTH < 4 * 3000
    key = {"Authorization": f"Bearer {await ecash.token(40_000, mint_url=mint.url)}"}

    embedded = await post(
        f"{node.url}/v1/embeddings",
        json.dumps({"model": "test-model", "input": inputs}).encode(),
        key,
    )
    assert embedded.status == 200, embedded.raw
    assert embedded.body["usage"]["prompt_tokens"] == 12_000
    assert embedded.headers["X-Routstr-Cost-Msats"] == str(cost_of(12_000, 0))

    completed = await post(
        f"{node.url}/v1/completions",
        json.dumps({"model": "test-model", "prompt": inputs, "max_tokens": 5}).encode(),
        key,
    )
    assert completed.status == 200, completed.raw
    usage = completed.body["usage"]
    assert usage["prompt_tokens"] == 12_000
    expected = cost_of(12_000, usage["completion_tokens"])
    assert completed.headers["X-Routstr-Cost-Msats"] == str(expected)
    await assert_balanced(node)
