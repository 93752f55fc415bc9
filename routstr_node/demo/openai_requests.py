"""OpenAI-shaped requests for the fake upstream: parsed and checked as OpenAI does.

Pure functions, no HTTP: a request body becomes a deterministic :class:`Reply` (an echo
of the prompt), or the error OpenAI would answer with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

JSONObject = dict[str, Any]


ECHO_PREFIX = "Echo:"


DEFAULT_EMBEDDING_DIMENSIONS = 8
MAX_EMBEDDING_DIMENSIONS = 3072  # text-embedding-3-large's, the most OpenAI serves
MAX_EMBEDDING_INPUTS = 2048


# what OpenAI bills a 1024x1024 image at high detail: an image costs tokens its URL
# does not show
IMAGE_TOKENS = 765
_IMAGE_PART_TYPES = ("image_url", "input_image")


def count_tokens(text: str) -> int:
    """The fake upstream's tokenizer: one token per whitespace-separated word."""
    return len(text.split())


def content_tokens(content: Any) -> int:
    """A message's prompt tokens: its words, and IMAGE_TOKENS for each image part."""
    images = 0
    if isinstance(content, list):
        images = sum(
            1 for p in content if isinstance(p, dict) and p.get("type") in _IMAGE_PART_TYPES
        )
    return count_tokens(content_text(content)) + images * IMAGE_TOKENS


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
    choices: int = 1  # the request's n: as many answers, each billed

    @property
    def text(self) -> str:
        return " ".join(self.words)

    @property
    def completion_tokens(self) -> int:
        return len(self.words) * self.choices

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
    prompt_tokens = sum(content_tokens(m.get("content")) for m in messages if isinstance(m, dict))
    words, truncated = reply_words(_last_user_text(messages), forced_words, cap)
    choices = _positive_int(body, "n") or 1
    return Reply(model, prompt_tokens, words, truncated, stream, include_usage, choices)


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


def _response_input_tokens(value: Any) -> int:
    if isinstance(value, str):
        return count_tokens(value)
    if isinstance(value, list) and value:
        return sum(content_tokens(item.get("content")) for item in value if isinstance(item, dict))
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
    prompt_tokens = _response_input_tokens(body.get("input"))
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        prompt_tokens += count_tokens(instructions)
    cap = _positive_int(body, "max_output_tokens")
    stream = body.get("stream") is True
    words, truncated = reply_words(_last_response_user_text(body["input"]), forced_words, cap)
    return Reply(model, prompt_tokens, words, truncated, stream, include_usage=True)


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
    if dimensions > MAX_EMBEDDING_DIMENSIONS:
        raise ApiError(
            400,
            f"Invalid 'dimensions': at most {MAX_EMBEDDING_DIMENSIONS} for this model.",
            param="dimensions",
            code="invalid_value",
        )
    if len(inputs) > MAX_EMBEDDING_INPUTS:
        raise ApiError(
            400,
            f"'$.input' is invalid: at most {MAX_EMBEDDING_INPUTS} inputs.",
            param="input",
        )
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise ApiError(400, "Invalid 'encoding_format'.", param="encoding_format")
    return model, inputs, dimensions, str(encoding)
