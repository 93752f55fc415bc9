"""The fake OpenAI-compatible upstream, checked with the official `openai` SDK."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from routstr_node.demo.upstream import RunningUpstream, count_tokens

API_KEY = "sk-upstream-test"
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]


@pytest.fixture
async def client(upstream: RunningUpstream) -> AsyncIterator[openai.AsyncOpenAI]:
    sdk = openai.AsyncOpenAI(base_url=upstream.url, api_key=API_KEY, max_retries=0)
    yield sdk
    await sdk.close()


async def _raw_post(upstream: RunningUpstream, path: str, body: Any) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{upstream.url}{path}", json=body, headers=headers) as response,
    ):
        return response.status, await response.read()


def _sse_data(raw: bytes) -> list[str]:
    events = raw.decode().split("\n\n")
    assert events[-1] == "", "every event ends with a blank line"
    return [
        line[len("data: ") :] for e in events[:-1] for line in e.split("\n") if line[:5] == "data:"
    ]


def test_count_tokens_counts_whitespace_separated_words() -> None:
    assert count_tokens("") == 0
    assert count_tokens("  one\ttwo\nthree  ") == 3


async def test_chat_echoes_the_prompt_with_usage(
    client: openai.AsyncOpenAI, upstream: RunningUpstream
) -> None:
    upstream.behaviour.expected_api_key = API_KEY
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "be brief"},
        *HELLO,
    ]

    reply = await client.chat.completions.create(model="my-model", messages=messages)

    assert reply.model == "my-model"
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.content == "Echo: hello there"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (4, 3)
    assert reply.usage.total_tokens == 7

    [seen] = upstream.requests
    assert (seen.method, seen.path) == ("POST", "/v1/chat/completions")
    assert seen.headers["authorization"] == f"Bearer {API_KEY}"
    assert seen.json["messages"] == messages


async def test_reply_is_capped_by_max_tokens(
    client: openai.AsyncOpenAI, upstream: RunningUpstream
) -> None:
    upstream.behaviour.reply_words = 10

    forced = await client.chat.completions.create(model="m", messages=HELLO)
    capped = await client.chat.completions.create(
        model="m",
        messages=HELLO,
        max_completion_tokens=4,
    )
    legacy = await client.chat.completions.create(model="m", messages=HELLO, max_tokens=2)

    assert forced.usage is not None and forced.usage.completion_tokens == 10
    assert count_tokens(forced.choices[0].message.content or "") == 10
    assert capped.choices[0].message.content == "Echo: hello there Echo:"
    assert capped.choices[0].finish_reason == "length"
    assert legacy.usage is not None and legacy.usage.completion_tokens == 2


async def test_chat_stream_without_include_usage_sends_no_usage(
    client: openai.AsyncOpenAI, upstream: RunningUpstream
) -> None:
    stream = await client.chat.completions.create(model="m", messages=HELLO, stream=True)
    chunks = [chunk async for chunk in stream]

    assert all(chunk.usage is None for chunk in chunks)
    assert [c.choices[0].delta.content for c in chunks] == ["", "Echo:", " hello", " there", None]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert {c.model for c in chunks} == {"m"}

    status, raw = await _raw_post(
        upstream, "/chat/completions", {"model": "m", "messages": HELLO, "stream": True}
    )
    data = _sse_data(raw)
    assert status == 200
    assert data[-1] == "[DONE]"
    assert all("usage" not in json.loads(d) for d in data[:-1])


async def test_chat_stream_with_include_usage_ends_with_a_usage_chunk(
    client: openai.AsyncOpenAI,
) -> None:
    stream = await client.chat.completions.create(
        model="m",
        messages=HELLO,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]

    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (2, 3)
    assert all(c.usage is None for c in chunks[:-1])
    text = "".join(c.choices[0].delta.content or "" for c in chunks[:-1])
    assert text == "Echo: hello there"


async def test_omit_usage_drops_usage_everywhere(
    client: openai.AsyncOpenAI, upstream: RunningUpstream
) -> None:
    upstream.behaviour.omit_usage = True

    reply = await client.chat.completions.create(model="m", messages=HELLO)
    stream = await client.chat.completions.create(
        model="m",
        messages=HELLO,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]

    assert reply.usage is None
    assert all(c.usage is None and c.choices for c in chunks)


async def test_cut_connection_surfaces_as_an_error(
    client: openai.AsyncOpenAI, upstream: RunningUpstream
) -> None:
    upstream.behaviour.cut_after_chunks = 2
    received: list[str | None] = []

    stream = await client.chat.completions.create(model="m", messages=HELLO, stream=True)
    with pytest.raises((httpx.TransportError, openai.APIConnectionError)):
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content)

    assert received == ["", "Echo:"]


async def test_fail_status_answers_in_openai_error_shape(
    client: openai.AsyncOpenAI, upstream: RunningUpstream
) -> None:
    upstream.behaviour.fail_status = 429
    with pytest.raises(openai.RateLimitError) as limited:
        await client.chat.completions.create(model="m", messages=HELLO)
    assert limited.value.code == "rate_limit_exceeded"

    upstream.behaviour.fail_status = 500
    status, raw = await _raw_post(upstream, "/embeddings", {"model": "e", "input": "x"})
    assert status == 500
    assert set(json.loads(raw)["error"]) == {"message", "type", "param", "code"}
    assert len(upstream.requests) == 2, "failed requests are recorded too"


async def test_wrong_or_missing_api_key_is_refused(
    client: openai.AsyncOpenAI, upstream: RunningUpstream
) -> None:
    upstream.behaviour.expected_api_key = "sk-other"
    with pytest.raises(openai.AuthenticationError) as refused:
        await client.chat.completions.create(model="m", messages=HELLO)
    assert refused.value.code == "invalid_api_key"

    upstream.behaviour.expected_api_key = None
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{upstream.url}/models") as response,
    ):
        body = await response.json()
    assert response.status == 401
    assert body["error"]["type"] == "invalid_request_error"


async def test_delay_holds_the_answer(
    client: openai.AsyncOpenAI, upstream: RunningUpstream
) -> None:
    upstream.behaviour.delay_s = 0.3
    upstream.behaviour.chunk_delay_s = 0.1
    started = time.monotonic()

    stream = await client.chat.completions.create(model="m", messages=HELLO, stream=True)
    chunks = [chunk async for chunk in stream]

    assert len(chunks) == 5
    assert time.monotonic() - started >= 0.3 + 4 * 0.1


async def test_legacy_completions_stream_and_body(client: openai.AsyncOpenAI) -> None:
    body = await client.completions.create(model="davinci", prompt="say it", max_tokens=5)
    stream = await client.completions.create(
        model="davinci", prompt="say it", stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]

    assert body.choices[0].text == "Echo: say it"
    assert body.usage is not None and body.usage.total_tokens == 5
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Echo: say it"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


async def test_embeddings_in_both_encodings(
    client: openai.AsyncOpenAI, upstream: RunningUpstream
) -> None:
    decoded = await client.embeddings.create(model="text-embedding-3-small", input=["a b", "c"])
    floats = await client.embeddings.create(
        model="text-embedding-3-small", input=["a b", "c"], encoding_format="float"
    )

    assert upstream.requests[0].json["encoding_format"] == "base64"
    assert decoded.model == "text-embedding-3-small"
    assert [len(d.embedding) for d in decoded.data] == [8, 8]
    assert decoded.data[0].embedding != decoded.data[1].embedding
    for left, right in zip(decoded.data, floats.data, strict=True):
        assert left.embedding == pytest.approx(right.embedding, abs=1e-6)
    assert (decoded.usage.prompt_tokens, decoded.usage.total_tokens) == (3, 3)


async def test_responses_api_body_and_event_stream(
    client: openai.AsyncOpenAI, upstream: RunningUpstream
) -> None:
    body = await client.responses.create(
        model="gpt-4o-mini", input="hi you", instructions="be nice"
    )
    stream = await client.responses.create(model="gpt-4o-mini", input="hi you", stream=True)
    events = [event async for event in stream]

    assert body.output_text == "Echo: hi you"
    assert body.usage is not None
    assert (body.usage.input_tokens, body.usage.output_tokens, body.usage.total_tokens) == (4, 3, 7)

    types = [e.type for e in events]
    assert types[0] == "response.created"
    assert types[-1] == "response.completed"
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert deltas == ["Echo:", " hi", " you"]
    completed = events[-1]
    assert completed.type == "response.completed"
    assert completed.response.usage is not None
    assert completed.response.usage.output_tokens == 3

    status, raw = await _raw_post(
        upstream, "/responses", {"model": "m", "input": "hi", "stream": True}
    )
    assert status == 200
    assert b"[DONE]" not in raw, "the Responses API ends with response.completed, no [DONE]"


async def test_models_and_unknown_paths(
    client: openai.AsyncOpenAI, upstream: RunningUpstream
) -> None:
    models = [m.id async for m in client.models.list()]
    assert "gpt-4o-mini" in models

    status, raw = await _raw_post(upstream, "/nowhere", {})
    assert status == 404
    assert json.loads(raw)["error"]["message"] == "Invalid URL (POST /v1/nowhere)"
