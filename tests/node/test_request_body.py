"""What the upstream receives: the client's body, renamed and asked for usage where needed."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from routstr_node.request_body import upstream_body

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
