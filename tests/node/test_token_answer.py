"""Renaming the model in an answer's JSON text without parsing it (stream events)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from routstr_node.token_answer import ModelRenamer

texts = st.text(alphabet=st.sampled_from('ab"\\:{},model /\n\u00e9'), max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | texts,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["model", "id", "role", "content"]) | texts, inner)
    ),
    max_leaves=8,
)


def renamed(value: Any, model_id: str) -> Any:
    """``value`` with every "model" member that holds a string set to ``model_id``."""
    if isinstance(value, dict):
        return {
            k: model_id if k == "model" and isinstance(v, str) else renamed(v, model_id)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [renamed(v, model_id) for v in value]
    return value


@given(json_values, texts, st.booleans())
def test_every_model_member_and_nothing_else_is_renamed(
    value: Any, model_id: str, compact: bool
) -> None:
    separators = (",", ":") if compact else (", ", ": ")
    text = json.dumps(value, separators=separators, ensure_ascii=False).encode()
    out = ModelRenamer(model_id)(text)
    assert json.loads(out) == renamed(value, model_id)


def test_an_event_naming_the_node_model_already_is_left_as_it_is() -> None:
    rename = ModelRenamer("m")
    event = b'data: {"id":"x","model":"m","choices":[]}\n\n'
    assert rename(event) is event
    assert rename(b'data: {"model":"up-m"}\n\n') == b'data: {"model":"m"}\n\n'
