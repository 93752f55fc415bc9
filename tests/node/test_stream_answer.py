"""Reading a stream as it is relayed: what passes, what is held back, the text counted,
and memory that does not grow with the answer."""

from __future__ import annotations

import json
import tracemalloc
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from routstr_node.config import ModelConfig, PricingSection
from routstr_node.pricing import ModelPrice
from routstr_node.routing import Candidate
from routstr_node.stream_answer import StreamAnswer, text_bytes
from routstr_node.token_answer import TokenRequest
from routstr_node.usage import estimate_tokens


def _answer() -> StreamAnswer:
    model = ModelConfig.model_validate(
        {
            "id": "m",
            "upstream": "up",
            "input_sat_per_1m": 1000000,
            "output_sat_per_1m": 2000000,
            "context_length": 100000,
            "max_output_tokens": 100000,
        }
    )
    offer = model.offers[0]
    price = ModelPrice.from_config(model, PricingSection(btc_usd=Decimal(1)), None, offer)
    request = TokenRequest("/v1/chat/completions", {"messages": []}, "m")
    return StreamAnswer(request, Candidate("up", offer, price, 10**9), request.renamer())


def _chunk(text: str, *, usage: object = None) -> bytes:
    event = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "upstream-m",
        "choices": [{"index": 0, "delta": {"content": text}}],
        "usage": usage,
    }
    return b"data: " + json.dumps(event, ensure_ascii=False).encode() + b"\n\n"


_TEXTS = st.lists(st.text(max_size=30), min_size=1, max_size=40)


@given(_TEXTS, st.integers(min_value=1, max_value=97), st.booleans())
def test_the_text_is_counted_and_every_event_renamed_however_bytes_arrive(
    texts: list[str], cut: int, escaped: bool
) -> None:
    """Events split anywhere across reads, in blocks or alone, with escapes or raw UTF-8:
    the count is the text's UTF-8 bytes, every event passes renamed, none is lost."""
    answer = _answer()
    stream = b"".join(_chunk(t) for t in texts)
    if escaped:
        stream = b"".join(
            b"data: " + json.dumps(json.loads(e[6:])).encode() + b"\n\n"
            for e in stream.split(b"\n\n")
            if e
        )
    out = b"".join(answer.feed(stream[i : i + cut]) for i in range(0, len(stream), cut))
    relayed = [json.loads(e[6:]) for e in out.split(b"\n\n") if e]
    assert [e["choices"][0]["delta"]["content"] for e in relayed] == texts
    assert {e["model"] for e in relayed} == {"m"}
    assert answer.output_bytes == len("".join(texts).encode())
    usage = answer.token_usage()
    if answer.output_bytes:
        assert usage is not None and usage.output_tokens == estimate_tokens("".join(texts))


def test_usage_and_done_are_held_back_and_usage_null_is_not_an_act() -> None:
    answer = _answer()
    assert answer.feed(_chunk("hello")).count(b"data:") == 1
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    final = b'data: {"id":"c1","choices":[],"usage":' + json.dumps(usage).encode() + b"}\n\n"
    assert answer.feed(_chunk(" you") + final + b"data: [DONE]\n\n").count(b"data:") == 1
    assert answer.done and answer.usage == (3, 2)
    assert text_bytes(_chunk("héllo")) == len("héllo".encode())


def test_memory_per_stream_does_not_grow_with_the_answer() -> None:
    """5,000 more events cost the stream's state no more than a constant: nothing of
    what passed is kept past a small batch (before: ~230 bytes an event)."""
    answer = _answer()
    events = [_chunk(f"word{i} ") for i in range(5_100)]
    for event in events[:100]:
        answer.feed(event)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for event in events[100:]:
            answer.feed(event)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert grown < 16 * 1024, grown  # at most the batch of blocks not yet counted
    assert answer.output_bytes == sum(len(f"word{i} ") for i in range(5_100))


@given(_TEXTS)
def test_a_completions_stream_counts_its_choices_text(texts: list[str]) -> None:
    answer = _answer()
    answer.request = TokenRequest("/v1/completions", {"prompt": "p"}, "m")
    events = [
        b"data: "
        + json.dumps({"id": "c", "object": "text_completion", "model": "x",
                      "choices": [{"index": 0, "text": t}], "usage": None}).encode()
        + b"\n\n"
        for t in texts
    ]  # fmt: skip
    out = b"".join(answer.feed(e) for e in events)
    assert out.count(b"data:") == len(texts)
    assert answer.output_bytes == len("".join(texts).encode())
