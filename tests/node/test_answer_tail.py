"""Reading a large answer's usage from its tail, and writing the cost into it."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from routstr_node.answer_tail import usage_at_the_end

USAGE = {"prompt_tokens": 12, "total_tokens": 12}


def test_usage_last_is_found_and_rewritten_in_place() -> None:
    answer = {"object": "list", "data": [{"embedding": [0.5] * 1000}], "usage": USAGE}
    raw = json.dumps(answer).encode()
    tail = usage_at_the_end(raw)
    assert tail is not None and tail.usage == USAGE
    rewritten = tail.with_usage(raw, {**USAGE, "cost": {"total_msats": 7}})
    assert json.loads(rewritten) == {**answer, "usage": {**USAGE, "cost": {"total_msats": 7}}}


def test_anything_but_the_roots_last_member_is_left_to_the_full_parse() -> None:
    for answer in (
        {"usage": USAGE, "model": "m"},  # not last
        {"data": {"usage": USAGE}},  # not the root's
        {"data": [{"usage": USAGE}]},
        {"text": 'say "usage": {"prompt_tokens": 1}'},  # inside a string
        {"usage": None},
        {"usage": {"prompt_tokens": 1, "usage": {}}},  # the last "usage" is nested
    ):
        tail = usage_at_the_end(json.dumps(answer).encode())
        assert tail is None or tail.usage == answer.get("usage"), answer
    assert usage_at_the_end(json.dumps([{"usage": USAGE}]).encode()) is None
    assert usage_at_the_end(b'{"usage": {"prompt_tokens": 1}') is None  # cut short


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(), json_values, max_size=5), json_values, st.booleans())
def test_what_it_finds_is_what_the_full_parse_finds(
    members: dict[str, Any], usage: Any, indent: bool
) -> None:
    """Whatever the answer, a usage found from the tail is the root's, and the rewritten
    answer is the parsed one with only its usage changed."""
    answer = {**{k: v for k, v in members.items() if k != "usage"}, "usage": usage}
    raw = json.dumps(answer, indent=2 if indent else None).encode()
    tail = usage_at_the_end(raw)
    if tail is None:
        assert not isinstance(usage, dict) or len(raw) > 60_000 or '"usage"' in json.dumps(usage)
        return
    assert tail.usage == usage
    assert json.loads(tail.with_usage(raw, {"cost": 1})) == {**answer, "usage": {"cost": 1}}
