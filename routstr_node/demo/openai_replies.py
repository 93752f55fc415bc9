"""OpenAI-shaped replies for the fake upstream: bodies and SSE streams per endpoint.

Pure functions, no HTTP: a :class:`Reply` rendered with the exact JSON and SSE framing
a real provider sends, so the node is tested against what it will meet.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import time
import uuid
from collections.abc import Iterator
from typing import Any

from routstr_node.demo.openai_requests import JSONObject, Reply, count_tokens, embedding_inputs

SYSTEM_FINGERPRINT = "fp_fake_upstream"


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex}"


def sse(payload: JSONObject, event: str | None = None) -> bytes:
    """One server-sent event, framed as OpenAI frames it."""
    data = json.dumps(payload, separators=(",", ":"))
    head = f"event: {event}\n" if event is not None else ""
    return f"{head}data: {data}\n\n".encode()


SSE_DONE = b"data: [DONE]\n\n"


def _finish_reason(reply: Reply) -> str:
    return "length" if reply.truncated else "stop"


def chat_usage(reply: Reply) -> JSONObject:
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def completion_usage(reply: Reply) -> JSONObject:
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
    }


def response_usage(reply: Reply) -> JSONObject:
    return {
        "input_tokens": reply.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": reply.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
    }


def chat_body(reply: Reply, *, with_usage: bool) -> JSONObject:
    body: JSONObject = {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": reply.model,
        "choices": [
            {
                "index": index,
                "message": {
                    "role": "assistant",
                    "content": reply.text,
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": _finish_reason(reply),
            }
            for index in range(reply.choices)
        ],
        "service_tier": "default",
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }
    if with_usage:
        body["usage"] = chat_usage(reply)
    return body


def chat_stream(reply: Reply, *, with_usage: bool) -> list[bytes]:
    """chat.completion.chunk events: role, one per word, finish, usage if asked, [DONE]."""
    send_usage = with_usage and reply.include_usage
    base: JSONObject = {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": reply.model,
        "service_tier": "default",
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }

    def chunk(delta: JSONObject, finish_reason: str | None, index: int = 0) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        payload = {**base, "choices": [choice]}
        if send_usage:
            payload["usage"] = None
        return sse(payload)

    indexes = range(reply.choices)  # with n > 1 the answers' chunks take turns, as OpenAI's do
    events = [
        chunk({"role": "assistant", "content": "", "refusal": None}, None, i) for i in indexes
    ]
    events.extend(chunk({"content": piece}, None, i) for piece in reply.pieces() for i in indexes)
    events.extend(chunk({}, _finish_reason(reply), i) for i in indexes)
    if send_usage:
        events.append(sse({**base, "choices": [], "usage": chat_usage(reply)}))
    events.append(SSE_DONE)
    return events


def completion_body(reply: Reply, *, with_usage: bool) -> JSONObject:
    body: JSONObject = {
        "id": new_id("cmpl-"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": reply.model,
        "choices": [
            {
                "text": reply.text,
                "index": 0,
                "logprobs": None,
                "finish_reason": _finish_reason(reply),
            }
        ],
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }
    if with_usage:
        body["usage"] = completion_usage(reply)
    return body


def completion_stream(reply: Reply, *, with_usage: bool) -> list[bytes]:
    """text_completion events: one per word, finish, usage if asked, [DONE]."""
    send_usage = with_usage and reply.include_usage
    base: JSONObject = {
        "id": new_id("cmpl-"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": reply.model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }

    def chunk(text: str, finish_reason: str | None) -> bytes:
        choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}
        payload = {**base, "choices": [choice]}
        if send_usage:
            payload["usage"] = None
        return sse(payload)

    events = [chunk(piece, None) for piece in reply.pieces()]
    events.append(chunk("", _finish_reason(reply)))
    if send_usage:
        events.append(sse({**base, "choices": [], "usage": completion_usage(reply)}))
    events.append(SSE_DONE)
    return events


def _response_message(item_id: str, text: str, status: str) -> JSONObject:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content if status == "completed" else [],
    }


def response_object(
    reply: Reply, response_id: str, item_id: str, *, done: bool, with_usage: bool
) -> JSONObject:
    """A Responses API `response` object, in progress or finished."""
    status = "in_progress"
    if done:
        status = "incomplete" if reply.truncated else "completed"
    body: JSONObject = {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "error": None,
        "incomplete_details": (
            {"reason": "max_output_tokens"} if done and reply.truncated else None
        ),
        "instructions": None,
        "max_output_tokens": None,
        "model": reply.model,
        "output": [_response_message(item_id, reply.text, "completed")] if done else [],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": False,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "metadata": {},
    }
    if with_usage:
        body["usage"] = response_usage(reply) if done else None
    return body


def response_body(reply: Reply, *, with_usage: bool) -> JSONObject:
    return response_object(reply, new_id("resp_"), new_id("msg_"), done=True, with_usage=with_usage)


def response_stream(reply: Reply, *, with_usage: bool) -> list[bytes]:
    """Responses API events, from response.created to response.completed (no [DONE])."""
    response_id, item_id = new_id("resp_"), new_id("msg_")
    sequence = iter(range(1_000_000))

    def event(type_: str, **fields: Any) -> bytes:
        return sse({"type": type_, "sequence_number": next(sequence), **fields}, event=type_)

    def snapshot(done: bool) -> JSONObject:
        return response_object(reply, response_id, item_id, done=done, with_usage=with_usage)

    where: JSONObject = {"item_id": item_id, "output_index": 0, "content_index": 0}
    empty_part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    full_part = {**empty_part, "text": reply.text}
    finished = "response.incomplete" if reply.truncated else "response.completed"
    events = [
        event("response.created", response=snapshot(False)),
        event("response.in_progress", response=snapshot(False)),
        event(
            "response.output_item.added",
            output_index=0,
            item=_response_message(item_id, "", "in_progress"),
        ),
        event("response.content_part.added", **where, part=empty_part),
    ]
    events.extend(
        event("response.output_text.delta", **where, delta=piece, logprobs=[])
        for piece in reply.pieces()
    )
    events.extend(
        [
            event("response.output_text.done", **where, text=reply.text, logprobs=[]),
            event("response.content_part.done", **where, part=full_part),
            event(
                "response.output_item.done",
                output_index=0,
                item=_response_message(item_id, reply.text, "completed"),
            ),
            event(finished, response=snapshot(True)),
        ]
    )
    return events


def embedding_vector(text: str, dimensions: int) -> list[float]:
    """A deterministic unit-range vector derived from the text's hash."""
    stream = _hash_bytes(text)
    return [next(stream) / 127.5 - 1.0 for _ in range(dimensions)]


def _hash_bytes(text: str) -> Iterator[int]:
    counter = 0
    while True:
        yield from hashlib.sha256(f"{counter}:{text}".encode()).digest()
        counter += 1


def embeddings_body(body: JSONObject, *, with_usage: bool) -> JSONObject:
    model, inputs, dimensions, encoding = embedding_inputs(body)
    data: list[JSONObject] = []
    for index, text in enumerate(inputs):
        vector = embedding_vector(text, dimensions)
        embedding: list[float] | str = vector
        if encoding == "base64":
            packed = struct.pack(f"<{len(vector)}f", *vector)
            embedding = base64.b64encode(packed).decode("ascii")
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    result: JSONObject = {"object": "list", "data": data, "model": model}
    if with_usage:
        tokens = sum(count_tokens(text) for text in inputs)
        result["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
    return result


def models_body(models: list[str]) -> JSONObject:
    created = int(time.time())
    data = [
        {"id": m, "object": "model", "created": created, "owned_by": "fake-upstream"}
        for m in models
    ]
    return {"object": "list", "data": data}
