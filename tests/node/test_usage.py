"""The node's own count of a request, for an answer that reports no usage."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import assume, given
from hypothesis import strategies as st

from routstr_node.usage import estimate_prompt_tokens, estimate_tokens

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
