"""What the upstream receives: the client's body, renamed and asked for usage where needed."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routstr_node.errors import ApiError
from routstr_node.request_body import nested_deeper_than, parse_json_object, upstream_body

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
bodies = st.fixed_dictionaries(
    {"model": st.sampled_from(["gpt-x", "other"]), "messages": json_values},
    optional={
        "stream": st.booleans(),
        "stream_options": st.one_of(
            st.none(), st.dictionaries(st.sampled_from(["include_usage", "x"]), json_values)
        ),
        "max_tokens": st.integers(min_value=1, max_value=10**6),
        "max_completion_tokens": st.none(),  # a cap left null: the node's own replaces it
    },
)
encodings = st.sampled_from(
    [
        {},
        {"separators": (",", ":")},
        {"indent": 2},
        {"ensure_ascii": False},
    ]
)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), f"duplicate keys: {keys}"
    return dict(pairs)


additions = st.one_of(
    st.none(),
    st.fixed_dictionaries({"max_completion_tokens": st.integers(min_value=1, max_value=10**6)}),
)


@given(bodies, encodings, st.sampled_from(["", "\n", "  \r\n"]), st.booleans(), additions)
def test_the_upstream_gets_the_same_body_with_its_model_and_a_usage_request(
    body: dict[str, Any],
    encoding: dict[str, Any],
    trailing: str,
    asks_usage: bool,
    added: dict[str, Any] | None,
) -> None:
    raw = (json.dumps(body, **encoding) + trailing).encode()
    expected = {**body, **(added or {}), "model": "gpt-x"}
    if asks_usage:
        options = body.get("stream_options")
        expected["stream_options"] = {
            **(options if isinstance(options, dict) else {}),
            "include_usage": True,
        }

    forwarded = upstream_body(raw, body, "gpt-x", asks_usage=asks_usage, added=added)

    assert json.loads(forwarded, object_pairs_hook=_no_duplicate_keys) == expected
    if body["model"] == "gpt-x" and not asks_usage and not added:
        assert forwarded == raw  # nothing to change: the client's bytes as they came


@given(st.recursive(st.none() | st.integers() | st.text(alphabet="[]{}\"\\ab", max_size=8),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(alphabet="[]{}ab", max_size=3), inner, max_size=3),
                    max_leaves=30))  # fmt: skip
def test_nesting_is_measured_as_the_parser_sees_it(value: object) -> None:
    """Brackets inside strings do not count; the depth is the document's own."""
    raw = json.dumps(value).encode()

    def depth(v: object) -> int:
        if isinstance(v, list):
            return 1 + max((depth(x) for x in v), default=0)
        if isinstance(v, dict):
            return 1 + max((depth(x) for x in v.values()), default=0)
        return 0

    real = depth(value)
    for limit in range(6):
        assert nested_deeper_than(raw, limit) == (real > limit)


def test_a_body_nested_past_the_limit_is_refused_before_it_is_parsed() -> None:
    with pytest.raises(ApiError) as refused:
        parse_json_object(b"[" * 100_000 + b"]" * 100_000)
    assert refused.value.code == "invalid_json" and "nests deeper" in refused.value.message
    wide = b'{"input": [' + b",".join(b"[1, 2]" for _ in range(1000)) + b"]}"
    assert len(parse_json_object(wide)["input"]) == 1000  # many brackets, two levels
