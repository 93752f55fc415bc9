"""The usage of a large answer, read from its tail, and the answer with the cost written in.

A batch of embeddings is tens of MB of numbers; parsing it whole to read ``usage`` and
encoding it again to add ``usage.cost`` held the interpreter for hundreds of ms (in a
thread too: the json module keeps the GIL), stalling every other request. Upstreams
put ``usage`` last in such answers: it is found from the end, and only it is rewritten.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_TAIL_BYTES = 64 * 1024
_USAGE_KEY = b'"usage"'
_COLON = re.compile(rb"\s*:\s*")
_ROOT_CLOSES = re.compile(rb"\s*}\s*\Z")  # the rest of the document: the root's last brace


@dataclass(frozen=True, slots=True)
class TailUsage:
    usage: dict[str, Any]
    start: int  # the usage object's bytes in the answer: raw[start:end]
    end: int

    def with_usage(self, raw: bytes, usage: dict[str, Any]) -> bytes:
        """The answer with ``usage`` in place of the one it carried."""
        whole = memoryview(raw)  # one copy of a large answer, not three
        return b"".join((whole[: self.start], json.dumps(usage).encode(), whole[self.end :]))


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
