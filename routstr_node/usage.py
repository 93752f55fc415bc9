"""Token counts: the upstream's ``usage`` when it reports one, the node's own count when not.

The reservation needs an upper bound on prompt tokens: a byte-level tokenizer never
makes more tokens than the UTF-8 bytes it reads, so the raw body length bounds it.
The fallback when usage is missing is an estimate (4 bytes a token), capped by the
reservation, so missing usage is never free and never costs more than was reserved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeGuard

_BYTES_PER_TOKEN = 4
_TEXT_KEYS = ("content", "text", "prompt", "input", "instructions", "system")


@dataclass(frozen=True, slots=True)
class TokenUsage:
    input_tokens: int
    output_tokens: int
    reported: bool  # False: the node's own count


def estimate_tokens(text: str) -> int:
    return estimate_tokens_of_bytes(len(text.encode()))


def estimate_tokens_of_bytes(utf8_bytes: int) -> int:
    return -(-utf8_bytes // _BYTES_PER_TOKEN)


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """What the upstream reads of a request, estimated like its output: text anywhere in
    it (messages, tools and their schemas, tool-call arguments, instructions...) at 4
    bytes a token, and token arrays a token an element. Inline media (``data:`` URLs) is
    left out: a provider does not read it as text.
    """
    text_bytes = 0
    tokens = 0
    pending: list[Any] = [value for key, value in body.items() if key != "model"]
    while pending:  # a loop, not recursion: the body may nest as deep as JSON allows
        value = pending.pop()
        if isinstance(value, str):
            if not value.startswith("data:"):
                text_bytes += len(value.encode())
        elif isinstance(value, list):
            if value and all(type(v) is int for v in value):
                tokens += len(value)
            else:
                pending.extend(value)
        elif isinstance(value, dict):
            pending.extend(value.values())
            text_bytes += sum(len(str(key).encode()) for key in value)
    return tokens + -(-text_bytes // _BYTES_PER_TOKEN)


# what a request can carry or name that the upstream bills beyond its bytes: media (a
# 1x1 image is 85 tokens or more in a few dozen bytes; a PDF's pages are images too),
# stored state, uploaded files, and tools the provider runs (search results are input);
# the body's size bounds none of it
_STORED_CONTEXT_KEYS = ("previous_response_id", "conversation", "prompt")
# chat's web search (OpenAI's search models) and OpenRouter's plugins (web, file parsing)
_PROVIDER_INPUT_KEYS = ("web_search_options", "plugins")
_MEDIA_KEYS = (
    "image_url",
    "input_audio",
    "audio",  # an earlier answer's audio, by id
    "video_url",
    "file",
    "file_id",
    "file_url",
    "file_data",
)
_MEDIA_TYPES = (
    "image_url",
    "input_image",
    "input_audio",
    "video_url",
    "input_video",
    "file",
    "input_file",
    "item_reference",  # a stored item of an earlier response
)
_OWN_TOOL_TYPES = ("function", "custom")
_BEYOND_BODY_HINTS = (
    b"image",
    b"audio",
    b"video",
    b"file",
    b"item_reference",
    b"previous_response_id",
    b"conversation",
    b"tools",
    b'"prompt"',
    b"web_search_options",
    b"plugins",
)


def reads_beyond_body(path: str, raw: bytes, body: dict[str, Any]) -> bool:
    """Whether the upstream may bill more input than the request's bytes: then only the
    model's context length bounds the prompt. A byte-level tokenizer reads no more
    tokens than bytes, but images, audio and files are not read as text."""
    if b"\\u" not in raw and not any(hint in raw for hint in _BEYOND_BODY_HINTS):
        return False  # the common request, decided without a walk (unless keys are escaped)
    if path == "/v1/responses" and any(body.get(k) for k in _STORED_CONTEXT_KEYS):
        return True
    if any(body.get(k) is not None for k in _PROVIDER_INPUT_KEYS):
        return True
    tools = body.get("tools")
    if isinstance(tools, list) and any(
        isinstance(t, dict) and t.get("type", "function") not in _OWN_TOOL_TYPES for t in tools
    ):
        return True
    pending: list[Any] = [body.get(k) for k in ("messages", "input", "prompt")]
    while pending:
        value = pending.pop()
        if isinstance(value, list):
            pending.extend(value)
        elif isinstance(value, dict):
            if value.get("type") in _MEDIA_TYPES:
                return True  # a media part, whatever its source says
            for key, item in value.items():
                if key in _MEDIA_KEYS and item:
                    return True
                if isinstance(item, list | dict):
                    pending.append(item)
    return False


def _collect(value: Any, parts: list[str]) -> None:
    if isinstance(value, str):
        parts.append(value)
    elif isinstance(value, list):
        for item in value:
            _collect(item, parts)
    elif isinstance(value, dict):
        for key in _TEXT_KEYS:
            if key in value:
                _collect(value[key], parts)


# the names each endpoint's upstream obeys as its output cap; the first is the one the
# node adds when a request sets none, so the upstream is held to what was reserved
OUTPUT_CAP_KEYS = {
    "/v1/chat/completions": ("max_completion_tokens", "max_tokens"),
    "/v1/completions": ("max_tokens",),
    "/v1/responses": ("max_output_tokens",),
}


def requested_max_output(path: str, body: dict[str, Any]) -> int | None:
    """The client's output cap under the names this endpoint obeys (the larger if it
    sets two); None when it sets none, -1 for a value that is not an integer.

    Another endpoint's name (``max_output_tokens`` on chat) bounds nothing upstream, so
    it bounds nothing here either.
    """
    cap = None
    for key in OUTPUT_CAP_KEYS.get(path, ()):
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            return -1
        cap = value if cap is None else max(cap, value)
    return cap


_CHOICE_KEYS = {"/v1/chat/completions": ("n",), "/v1/completions": ("n", "best_of")}
MAX_CHOICES = 128  # OpenAI's limit for n


def requested_choices(path: str, body: dict[str, Any]) -> int:
    """How many completions the upstream makes: ``n`` (``best_of`` for completions), and
    for completions that again for every prompt of a list. Each may produce up to the
    output cap. 0 when ``n`` or ``best_of`` is not an integer from 1 to MAX_CHOICES."""
    count = 1
    for key in _CHOICE_KEYS.get(path, ()):
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= MAX_CHOICES:
            return 0
        count = max(count, value)
    if path == "/v1/completions":
        count *= _prompt_count(body.get("prompt"))
    return count


def input_sequences(path: str, body: dict[str, Any]) -> int:
    """How many inputs the upstream reads and bills apart, each up to the model's context:
    the prompts of a completions list, the inputs of an embeddings list; else one."""
    if path == "/v1/completions":
        return _prompt_count(body.get("prompt"))
    if path == "/v1/embeddings":
        return _prompt_count(body.get("input"))
    return 1


def _prompt_count(prompt: Any) -> int:
    """Prompts in a completions request: a list of strings or of token lists is many; a
    string or one token list is one."""
    if isinstance(prompt, list) and prompt and all(isinstance(p, str | list) for p in prompt):
        return len(prompt)
    return 1


def reported_usage(usage: Any) -> tuple[int, int] | None:
    """(input, output) from an OpenAI-style ``usage`` object, any endpoint's names."""
    if not isinstance(usage, dict):
        return None
    input_tokens = usage.get("prompt_tokens", usage.get("input_tokens"))
    output_tokens = usage.get("completion_tokens", usage.get("output_tokens", 0))
    if _count(input_tokens) and _count(output_tokens):
        return input_tokens, output_tokens
    return None


def _count(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def response_text(body: Any) -> str:
    """The generated text of a non-streaming response (for the own count)."""
    parts: list[str] = []
    if isinstance(body, dict):
        for choice in body.get("choices") or []:
            if isinstance(choice, dict):
                message = choice.get("message") or {}
                _collect(message.get("content") if isinstance(message, dict) else None, parts)
                _collect(choice.get("text"), parts)
        for item in body.get("output") or []:
            _collect(item, parts)
    return "".join(parts)


def delta_text(event: dict[str, Any]) -> str:
    """The generated text one stream event carries."""
    parts: list[str] = []
    for choice in event.get("choices") or []:
        if isinstance(choice, dict):
            delta = choice.get("delta")
            if isinstance(delta, dict):
                _collect(delta.get("content"), parts)
            _collect(choice.get("text"), parts)
    if event.get("type") == "response.output_text.delta":
        _collect(event.get("delta"), parts)
    return "".join(parts)
