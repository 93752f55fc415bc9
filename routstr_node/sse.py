"""Server-sent events: the data of an event, and events the node writes itself."""

from __future__ import annotations

import json
from typing import Any


def event_data(event: bytes) -> str | None:
    """The joined ``data:`` lines of an event, or None when it has none."""
    lines = [
        line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")
    ]
    if not lines:
        return None
    return b"\n".join(lines).decode("utf-8", "replace")


def event_json(data: str) -> dict[str, Any] | None:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def encode_event(payload: dict[str, Any], *, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"
