"""Reading a token route's stream as it passes: what to relay, what it cost, in constant memory.

A stream is relayed in blocks of whole events (all the complete events a read brought),
not event by event. A block that holds nothing the node must act on (no usage object,
no ``[DONE]``, no Responses API event) is relayed as it came, with the model renamed in
its bytes and its generated text counted, by scans in C: the JSON is never decoded.
Only the first events (for the stream's id and type) and the ones that may carry usage
or end the stream are parsed.

Nothing relayed is kept past a small batch: the own count a stream without usage is
charged from needs only the number of UTF-8 bytes of its text, so that is what is kept
(before, every relayed event's text was held until the end: about 230 bytes an event,
2.3 MB for a 10,000-token answer; now at most 8 KiB a stream).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from routstr_node.pricing import Cost
from routstr_node.routing import Candidate
from routstr_node.sse import event_data, event_json
from routstr_node.token_answer import ModelRenamer, TokenRequest, cost_at
from routstr_node.usage import TokenUsage, delta_text, reported_usage

_FINAL_RESPONSE_EVENTS = ("response.completed", "response.incomplete", "response.failed")
# the generated text of a chunk: choices[].delta.content on chat, choices[].text on
# completions. One literal name a pattern (the engine then skips to it in C), and a JSON
# string in the "unrolled" form (runs of plain bytes between escapes): Python's engine
# runs a per-byte alternation byte by byte, 3.3 µs a chat chunk, against 0.4 µs this way
_STRING = rb'\s*:\s*"([^"\\]*(?:\\.[^"\\]*)*)"'
_TEXT_OF = {
    "/v1/chat/completions": re.compile(rb'"content"' + _STRING),
    "/v1/completions": re.compile(rb'"text"' + _STRING),
}
_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')
# relayed blocks are kept at most this long before their text is counted: memory per
# stream stays bounded however long the answer, and a count runs once per ~30 events
_COUNT_BATCH_BYTES = 8 * 1024


def first_to_parse(block: bytes) -> int:
    """Where the first thing the node acts on starts in a block of events (-1: nothing):
    a usage object (not OpenAI's `"usage": null` on every chat chunk), the stream's end,
    or a Responses API event (their text, usage and final event are typed events)."""
    found = [at for at in (block.find(b"[DONE]"), block.find(b'"response.')) if at >= 0]
    usage = _USAGE_OBJECT.search(block)
    if usage is not None:
        found.append(usage.start())
    return min(found) if found else -1


def text_bytes(block: bytes, path: str = "/v1/chat/completions") -> int:
    """UTF-8 bytes of the generated text in a block of chat or completions events.

    A JSON string without escapes is its text's UTF-8 bytes as they stand; one with
    escapes is decoded (a small string, rarely). Other routes' text is in events the
    node parses anyway.
    """
    pattern = _TEXT_OF.get(path)
    if pattern is None:
        return 0
    total = 0
    for raw in pattern.findall(block):
        if b"\\" in raw:
            try:
                total += len(json.loads(b'"' + raw + b'"').encode())
            except ValueError:
                total += len(raw)
        else:
            total += len(raw)
    return total


@dataclass
class StreamAnswer:
    """One stream of a token route, read as it is relayed (PaidCall's Output)."""

    request: TokenRequest
    candidate: Candidate
    rename: ModelRenamer
    usage: tuple[int, int] | None = None
    usage_extra: dict[str, Any] = field(default_factory=dict)
    counted_bytes: int = 0  # UTF-8 bytes of the text relayed and counted so far
    _uncounted: list[bytes] = field(default_factory=list)  # relayed, counted in batches
    _uncounted_size: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    final_response_event: dict[str, Any] | None = None
    done: bool = False
    _rest: bytes = b""  # the start of an event whose end has not come yet

    def feed(self, chunk: bytes) -> bytes:
        """What of these bytes to relay now: every complete event, renamed, except those
        held back (the upstream's usage event, its final response event, ``[DONE]``)."""
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n")
        data = self._rest + chunk if self._rest else chunk
        end = data.rfind(b"\n\n")
        if end < 0:
            self._rest = data
            return b""
        block, self._rest = data[: end + 2], data[end + 2 :]
        out: list[bytes] = []
        if not self.meta:  # the first event names the stream: parsed once
            first = block.find(b"\n\n") + 2
            out.append(self._event(block[:first]))
            block = block[first:]
        while block:
            at = first_to_parse(block)
            if at < 0:
                out.append(self._pass(block))
                break
            # the events before it pass as they are; it alone is parsed
            before = block.rfind(b"\n\n", 0, at)
            start = before + 2 if before >= 0 else 0
            stop = block.find(b"\n\n", at) + 2
            if start:
                out.append(self._pass(block[:start]))
            out.append(self._event(block[start:stop]))
            block = block[stop:]
        return b"".join(out)

    def _pass(self, events: bytes) -> bytes:
        """Events the node only relays: renamed in their bytes, their text counted later."""
        self._uncounted.append(events)
        self._uncounted_size += len(events)
        if self._uncounted_size > _COUNT_BATCH_BYTES:
            self._count()
        return self.rename(events)

    def _event(self, event: bytes) -> bytes:
        """One event the node reads: the stream's first, or one it may act on."""
        if not event.strip():
            return b""
        data = event_data(event)
        if data is None:
            return event
        if data.strip() == "[DONE]":
            self.done = True
            return b""
        obj = event_json(data)
        if obj is None:
            return event
        if not self.meta:
            for key in ("id", "created", "model", "object"):
                if key in obj:
                    self.meta[key] = obj[key]
        if obj.get("type") in _FINAL_RESPONSE_EVENTS:
            response = obj.get("response")
            if isinstance(response, dict):
                self._take_usage(response.get("usage"))
            self.final_response_event = obj
            return b""
        if obj.get("usage"):
            self._take_usage(obj["usage"])
            if not obj.get("choices"):
                return b""
        self.counted_bytes += len(delta_text(obj).encode())
        return self.rename(event)

    def _count(self) -> None:
        """Count the text of the blocks relayed since the last count, in one pass: the
        scan's cost is per call more than per byte, so a batch costs a fraction of
        counting each block as it passes."""
        if self._uncounted:
            self.counted_bytes += text_bytes(b"".join(self._uncounted), self.request.path)
            self._uncounted.clear()
            self._uncounted_size = 0

    @property
    def output_bytes(self) -> int:
        """UTF-8 bytes of the generated text relayed so far (for the own count)."""
        self._count()
        return self.counted_bytes

    def _take_usage(self, usage: Any) -> None:
        counts = reported_usage(usage)
        if counts is not None and isinstance(usage, dict):
            self.usage = counts
            self.usage_extra = {k: v for k, v in usage.items() if k != "cost"}

    @property
    def nothing_came(self) -> bool:
        """No usage, no final event and no end: the upstream ended without an answer."""
        return self.usage is None and self.final_response_event is None and not self.done

    def token_usage(self) -> TokenUsage | None:
        """The upstream's usage, else the own count of what was relayed (None: nothing)."""
        if self.usage:
            return TokenUsage(self.usage[0], self.usage[1], True)
        if self.output_bytes:
            return self.request.own_count_of_bytes(self.output_bytes)
        return None

    def cost(self) -> Cost:
        """What the stream relayed so far costs at its provider (PaidCall's Output)."""
        usage = self.token_usage()
        return cost_at(self.candidate, usage) if usage is not None else Cost(0, 0, 0)
