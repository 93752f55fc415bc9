"""A stream of 10,000 events through the node: charged from the upstream's usage, and
from the node's own count when the upstream sends none, the text counted as it passed
(nothing of it is kept)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support.e2e import assert_balanced, chat_text, stream_post
from support.ecash import EcashFactory
from support.node import RunningNode, run_node

from routstr_node.demo.mint import LocalMint
from routstr_node.demo.upstream import RunningUpstream
from routstr_node.usage import estimate_prompt_tokens, estimate_tokens

EVENTS = 10_000
LONG_MODEL = """
[[models]]
id = "long-model"
upstream = "fake"
input_sat_per_1m = 1000000
output_sat_per_1m = 1000
context_length = 100000
max_output_tokens = 100000
"""


@pytest.fixture
async def node(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream
) -> AsyncIterator[RunningNode]:
    async with run_node(tmp_path / "node", [mint.url], upstream.url, extra_toml=LONG_MODEL) as n:
        yield n


@pytest.mark.parametrize("with_usage", [True, False], ids=["usage", "own-count"])
async def test_a_stream_of_ten_thousand_events_is_charged_exactly(
    node: RunningNode,
    upstream: RunningUpstream,
    ecash: EcashFactory,
    mint: LocalMint,
    with_usage: bool,
) -> None:
    upstream.behaviour.reply_words = EVENTS
    upstream.behaviour.omit_usage = not with_usage
    body = {
        "model": "long-model",
        "messages": [{"role": "user", "content": "go on"}],
        "stream": True,
    }
    token = await ecash.token(200, mint_url=mint.url)

    status, _, events, raw = await stream_post(
        f"{node.url}/v1/chat/completions", json.dumps(body).encode(), {"X-Cashu": token}
    )

    assert status == 200, raw[:300]
    chunks = [e for e in events if e.data != "[DONE]" and e.json.get("choices")]
    assert len(chunks) >= EVENTS
    assert all(e.json["model"] == "long-model" for e in chunks)
    final = events[-2].json
    usage = final["usage"]
    text = chat_text(events)
    if with_usage:
        input_tokens, output_tokens = usage["prompt_tokens"], usage["completion_tokens"]
        assert output_tokens >= EVENTS  # the upstream's own count
    else:  # the node's count: 4 bytes a token of what it relayed, the prompt estimated
        input_tokens = estimate_prompt_tokens(body)
        output_tokens = estimate_tokens(text)
        assert (usage["prompt_tokens"], usage["completion_tokens"]) == (
            input_tokens,
            output_tokens,
        )
    expected = input_tokens * 1000 + output_tokens  # msat: 1 sat / input, 1 msat / output
    assert usage["cost"]["total_msats"] == expected
    assert ecash.amount(final["cashu_change"]) == (200_000 - expected) // 1000
    await assert_balanced(node)
