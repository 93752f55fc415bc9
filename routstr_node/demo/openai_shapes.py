"""OpenAI-shaped request parsing and reply bodies for the fake upstream.

Pure functions, no HTTP: they turn a request body into a deterministic reply (an echo
of the prompt) and render it the way OpenAI does for each endpoint, so the node can be
tested against the exact JSON and SSE framing a real provider sends.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

JSONObject = dict[str, Any]

ECHO_PREFIX = "Echo:"
DEFAULT_EMBEDDING_DIMENSIONS = 8
SYSTEM_FINGERPRINT = "fp_fake_upstream"


def count_tokens(text: str) -> int:
    """The fake upstream's tokenizer: one token per whitespace-separated word."""
    return len(text.split())


class ApiError(Exception):
    """A request the upstream refuses, rendered as OpenAI's error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code

    def body(self) -> JSONObject:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type_: str, param: str | None, code: str | None) -> JSONObject:
    """OpenAI's error envelope."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


_STATUS_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "The request is invalid."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", None, "The server had an error while processing your request."),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


def status_error(status: int) -> ApiError:
    """The error OpenAI would answer with for `status` (used by `fail_status`)."""
    type_, code, message = _STATUS_ERRORS.get(
        status, ("server_error", None, f"Upstream failure {status}.")
    )
    return ApiError(status, message, type_=type_, code=code)


def parse_json_object(raw: bytes) -> JSONObject:
    """The request body as a JSON object, or the 400 OpenAI gives for anything else."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(
            400,
            "We could not parse the JSON body of your request. (HINT: This likely means "
            "you aren't using your HTTP library correctly.)",
        ) from exc
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    return body


def _model(body: JSONObject) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "you must provide a model parameter")
    return model


def _positive_int(body: JSONObject, name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ApiError(
            400,
            f"Invalid '{name}': expected an integer greater than or equal to 1.",
            param=name,
            code="integer_below_min_value",
        )
    return value


def _stream_flags(body: JSONObject) -> tuple[bool, bool]:
    """(stream, include_usage), refusing stream_options without stream as OpenAI does."""
    stream = body.get("stream") is True
    options = body.get("stream_options")
    if options is not None and not stream:
        raise ApiError(
            400,
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
        )
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    return stream, include_usage


def content_text(content: Any) -> str:
    """The text of a message's content: a string, or the text of its text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        ]
        return " ".join(texts)
    return ""


@dataclass(frozen=True)
class Reply:
    """What the upstream will answer, before it is rendered for an endpoint."""

    model: str
    prompt_tokens: int
    words: list[str]
    truncated: bool
    stream: bool
    include_usage: bool

    @property
    def text(self) -> str:
        return " ".join(self.words)

    @property
    def completion_tokens(self) -> int:
        return len(self.words)

    def pieces(self) -> list[str]:
        """One word per stream chunk; the pieces concatenate to `text`."""
        return [word if i == 0 else f" {word}" for i, word in enumerate(self.words)]


def reply_words(echo_of: str, forced: int | None, cap: int | None) -> tuple[list[str], bool]:
    """The reply's words and whether `cap` cut them short.

    The reply echoes the prompt; `forced` repeats that echo to exactly that many words.
    """
    words = f"{ECHO_PREFIX} {echo_of}".split()
    if forced is not None:
        words = [words[i % len(words)] for i in range(forced)]
    if cap is not None and len(words) > cap:
        return words[:cap], True
    return words, False


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return content_text(message.get("content"))
    last = messages[-1]
    return content_text(last.get("content")) if isinstance(last, dict) else ""


def parse_chat(body: JSONObject, forced_words: int | None) -> Reply:
    """A /v1/chat/completions request: echo the last user message."""
    model = _model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(
            400,
            "Missing required parameter: 'messages'.",
            param="messages",
            code="missing_required_parameter",
        )
    cap = _positive_int(body, "max_completion_tokens") or _positive_int(body, "max_tokens")
    stream, include_usage = _stream_flags(body)
    prompt_tokens = sum(
        count_tokens(content_text(m.get("content"))) for m in messages if isinstance(m, dict)
    )
    words, truncated = reply_words(_last_user_text(messages), forced_words, cap)
    return Reply(model, prompt_tokens, words, truncated, stream, include_usage)


def _prompt_texts(value: Any, name: str) -> list[str]:
    """Strings (or token arrays, counted as words) from a prompt/input field."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return [" ".join(str(v) for v in value)]
        texts: list[str] = []
        for item in value:
            texts.extend(_prompt_texts(item, name))
        return texts
    raise ApiError(
        400,
        f"Missing required parameter: '{name}'.",
        param=name,
        code="missing_required_parameter",
    )


def parse_completion(body: JSONObject, forced_words: int | None) -> Reply:
    """A legacy /v1/completions request: echo the (last) prompt."""
    model = _model(body)
    prompts = _prompt_texts(body.get("prompt"), "prompt")
    cap = _positive_int(body, "max_tokens")
    stream, include_usage = _stream_flags(body)
    prompt_tokens = sum(count_tokens(p) for p in prompts)
    words, truncated = reply_words(prompts[-1], forced_words, cap)
    return Reply(model, prompt_tokens, words, truncated, stream, include_usage)


def _response_input_texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        return [
            content_text(item.get("content")) if isinstance(item, dict) else "" for item in value
        ]
    raise ApiError(
        400,
        "Missing required parameter: 'input'.",
        param="input",
        code="missing_required_parameter",
    )


def _last_response_user_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return _last_user_text(value) if isinstance(value, list) else ""


def parse_response(body: JSONObject, forced_words: int | None) -> Reply:
    """A /v1/responses request: echo the last user input."""
    model = _model(body)
    inputs = _response_input_texts(body.get("input"))
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        inputs.append(instructions)
    cap = _positive_int(body, "max_output_tokens")
    stream = body.get("stream") is True
    prompt_tokens = sum(count_tokens(text) for text in inputs)
    words, truncated = reply_words(_last_response_user_text(body["input"]), forced_words, cap)
    return Reply(model, prompt_tokens, words, truncated, stream, include_usage=True)


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
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": reply.text,
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": _finish_reason(reply),
            }
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

    def chunk(delta: JSONObject, finish_reason: str | None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        payload = {**base, "choices": [choice]}
        if send_usage:
            payload["usage"] = None
        return sse(payload)

    events = [chunk({"role": "assistant", "content": "", "refusal": None}, None)]
    events.extend(chunk({"content": piece}, None) for piece in reply.pieces())
    events.append(chunk({}, _finish_reason(reply)))
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


def embedding_inputs(body: JSONObject) -> tuple[str, list[str], int, str]:
    """(model, inputs, dimensions, encoding_format) of an /v1/embeddings request."""
    model = _model(body)
    raw = body.get("input")
    if isinstance(raw, list) and raw and all(isinstance(v, list) for v in raw):
        inputs = [" ".join(str(t) for t in v) for v in raw]
    elif isinstance(raw, list) and raw and all(isinstance(v, str) for v in raw):
        inputs = list(raw)
    else:
        inputs = _prompt_texts(raw, "input")
    if any(not text for text in inputs):
        raise ApiError(400, "'$.input' is invalid. Please check the API reference.", param="input")
    dimensions = _positive_int(body, "dimensions") or DEFAULT_EMBEDDING_DIMENSIONS
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise ApiError(400, "Invalid 'encoding_format'.", param="encoding_format")
    return model, inputs, dimensions, str(encoding)


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
