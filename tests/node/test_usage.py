"""The node's own count of a request, for an answer that reports no usage."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import assume, given
from hypothesis import strategies as st

from routstr_node.usage import estimate_prompt_tokens, estimate_tokens, reads_beyond_body

LONG = "word " * 8000  # 40,000 bytes: 10,000 tokens at 4 bytes a token


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}


def test_text_anywhere_in_the_request_counts() -> None:
    plain = estimate_prompt_tokens(chat())
    tools = [{"type": "function", "function": {"name": "f", "description": LONG}}]
    call = {
        "role": "assistant",
        "tool_calls": [{"id": "1", "type": "function", "function": {"arguments": LONG}}],
    }
    for body in (
        chat(tools=tools),
        {"model": "m", "messages": [call, {"role": "tool", "content": "ok"}]},
        chat(response_format={"type": "json_schema", "json_schema": {"description": LONG}}),
        {"model": "m", "input": "hi", "instructions": LONG},
    ):
        assert estimate_prompt_tokens(body) >= estimate_tokens(LONG) > 100 * plain


def test_token_arrays_count_a_token_an_element_and_inline_media_not_at_all() -> None:
    assert estimate_prompt_tokens({"model": "m", "prompt": list(range(500))}) == 500
    assert estimate_prompt_tokens({"model": "m", "prompt": [[1, 2, 3], [4, 5]]}) == 5
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 10**6}}
    body = {"model": "m", "messages": [{"role": "user", "content": [image]}]}
    assert estimate_prompt_tokens(body) < 20


def test_nesting_deeper_than_python_recurses_is_counted() -> None:
    deep: Any = "text"
    for _ in range(100_000):
        deep = [deep, "x"]
    assert estimate_prompt_tokens({"model": "m", "input": deep}) > 100_000 // 4


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)


@given(st.dictionaries(st.text(), json_values, max_size=6), json_values)
def test_never_more_than_the_reservation_bound_and_never_less_for_more(
    body: dict[str, Any], more: Any
) -> None:
    """The reservation bounds the prompt by the body's bytes (a token a byte at most)."""
    assume("more" not in body)
    estimate = estimate_prompt_tokens(body)
    assert 0 <= estimate <= max(1, math.ceil(len(json.dumps(body).encode())))
    assert estimate_prompt_tokens({**body, "more": more}) >= estimate


CHAT, RESPONSES, COMPLETIONS = "/v1/chat/completions", "/v1/responses", "/v1/completions"


def beyond(path: str, body: dict[str, Any]) -> bool:
    return reads_beyond_body(path, json.dumps(body).encode(), body)


def image_part(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url, "detail": "high"}}


def test_what_the_upstream_bills_beyond_the_text_is_beyond_the_body() -> None:
    user = {"role": "user", "content": [{"type": "text", "text": "hi"}]}
    assert not beyond(CHAT, {"model": "m", "messages": [user]})
    assert beyond(
        CHAT, {"model": "m", "messages": [{**user, "content": [image_part("https://x/y.png")]}]}
    )
    # inline media too: a 1x1 image is 85 tokens or more in a few dozen bytes
    inline = image_part("data:image/png;base64,AA")
    assert beyond(CHAT, {"model": "m", "messages": [{**user, "content": [inline]}]})
    audio = {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
    assert beyond(CHAT, {"model": "m", "messages": [{**user, "content": [audio]}]})
    # a media part with no usable source is still billed as media by some upstreams
    for empty in ({"type": "image_url", "image_url": {}}, {"type": "input_image"}):
        assert beyond(CHAT, {"model": "m", "messages": [{**user, "content": [empty]}]})
    # stored or referenced inputs: an earlier answer's audio, a response item, video
    earlier = {"role": "assistant", "audio": {"id": "audio_1"}}
    assert beyond(CHAT, {"model": "m", "messages": [earlier, user]})
    reference = {"type": "item_reference", "id": "msg_1"}
    assert beyond(RESPONSES, {"model": "m", "input": [reference]})
    video = {"type": "video_url", "video_url": {"url": "https://x/v.mp4"}}
    assert beyond(CHAT, {"model": "m", "messages": [{**user, "content": [video]}]})
    file_part = {"type": "file", "file": {"file_id": "file-abc"}}
    assert beyond(CHAT, {"model": "m", "messages": [{**user, "content": [file_part]}]})
    function = {"type": "function", "function": {"name": "f", "parameters": {}}}
    assert not beyond(CHAT, {"model": "m", "messages": [user], "tools": [function]})
    assert beyond(RESPONSES, {"model": "m", "input": "hi", "tools": [{"type": "web_search"}]})
    assert beyond(RESPONSES, {"model": "m", "input": "hi", "previous_response_id": "resp_1"})
    assert beyond(CHAT, {"model": "m", "messages": [user], "web_search_options": {}})
    assert beyond(CHAT, {"model": "m", "messages": [user], "plugins": [{"id": "web"}]})
    assert beyond(RESPONSES, {"model": "m", "input": "hi", "conversation": "conv_1"})
    assert beyond(RESPONSES, {"model": "m", "prompt": {"id": "pmpt_1"}, "input": "hi"})
    image = {"type": "input_image", "image_url": "https://x/y.png"}
    assert beyond(RESPONSES, {"model": "m", "input": [{"role": "user", "content": [image]}]})
    pdf = {"type": "input_file", "file_url": "https://x/a.pdf"}
    assert beyond(RESPONSES, {"model": "m", "input": [{"role": "user", "content": [pdf]}]})
    # a completions prompt is the text itself, not a stored prompt
    assert not beyond(COMPLETIONS, {"model": "m", "prompt": "say image_url and file_id"})


def test_escaped_names_are_seen_as_the_upstream_sees_them() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": [image_part("https://x")]}]}
    raw = json.dumps(body).encode().replace(b"image_url", b"image\\u005furl")
    assert json.loads(raw) == body
    assert reads_beyond_body(CHAT, raw, body)


_names = st.sampled_from(
    ["messages", "input", "prompt", "content", "image_url", "url", "file_id", "file_url",
     "tools", "type", "previous_response_id", "conversation", "text", "x",
     "web_search_options", "plugins"]
)  # fmt: skip
_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from(["", "data:x", "https://x", "web_search", "function", "input_image", "file"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_names, inner, max_size=4),
    max_leaves=25,
)


@given(
    st.dictionaries(_names, _values, max_size=5), st.sampled_from([CHAT, RESPONSES, COMPLETIONS])
)
def test_the_quick_look_at_the_bytes_never_changes_the_answer(
    body: dict[str, Any], path: str
) -> None:
    """The byte scan only skips the walk: forcing the walk gives the same answer."""
    assert beyond(path, body) == reads_beyond_body(path, b"\\u", body)
