"""The usage of a large answer, read from its tail, and the answer with the cost written in.

A batch of embeddings is tens of MB of numbers; parsing it whole to read ``usage`` and
encoding it again to add ``usage.cost`` held the interpreter for hundreds of ms (in a
thread too: the json module keeps the GIL), stalling every other request. Upstreams
put ``usage`` last in such answers: it is found from the end, and only it is rewritten.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

_TAIL_BYTES = 64 * 1024
_HEAD_BYTES = 4 * 1024
_USAGE_KEY = b'"usage"'
_COLON = re.compile(rb"\s*:\s*")
_ROOT_CLOSES = re.compile(rb"\s*}\s*\Z")  # the rest of the document: the root's last brace


@dataclass(frozen=True, slots=True)
class TailUsage:
    usage: dict[str, Any]
    start: int  # the usage object's bytes in the answer: raw[start:end]
    end: int

    def with_usage(
        self,
        raw: bytes,
        usage: dict[str, Any],
        after: Mapping[str, Any] | None = None,
        edit: Callable[[bytes], bytes] | None = None,
    ) -> bytes:
        """The answer with ``usage`` in place of the one it carried, the members ``after``
        added behind it (the root's last), and ``edit`` applied to the answer's head and
        to what comes just before its usage (where its other top-level members are)."""
        whole = memoryview(raw)  # one copy of a large answer, not three
        members = json.dumps(usage).encode()
        if after:
            members += b"," + json.dumps(after).encode()[1:-1]
        if edit is None:
            return b"".join((whole[: self.start], members, whole[self.end :]))
        head = min(_HEAD_BYTES, self.start)
        near = max(head, self.start - _TAIL_BYTES)
        return b"".join(
            (
                edit(bytes(whole[:head])),
                whole[head:near],
                edit(bytes(whole[near : self.start])),
                members,
                whole[self.end :],
            )
        )


def usage_at_the_end(raw: bytes) -> TailUsage | None:
    """The root object's ``usage`` when it is the last member, else None (parse it whole).

    A ``"usage"`` found from the end whose object is followed only by the document's last
    ``}`` is the root's member: that brace closes the root. Inside a string the quotes
    would be escaped, so a key is never matched there.
    """
    key = raw.rfind(_USAGE_KEY, max(0, len(raw) - _TAIL_BYTES))
    colon = _COLON.match(raw, key + len(_USAGE_KEY)) if key >= 0 else None
    if colon is None:
        return None
    start = colon.end()
    try:
        text = raw[start:].decode()
        value, length = json.JSONDecoder().raw_decode(text)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    end = start + len(text[:length].encode())
    if not isinstance(value, dict) or _ROOT_CLOSES.match(raw, end) is None:
        return None
    return TailUsage(value, start, end)
