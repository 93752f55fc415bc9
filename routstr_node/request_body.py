"""Request bodies: the JSON object every POST route expects, and what the upstream gets."""

from __future__ import annotations

import json
from typing import Any

from routstr_node.errors import invalid_request


def parse_json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python goes
        raise invalid_request("invalid_json", "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise invalid_request("invalid_json", "the request body must be a JSON object")
    return body


_ASK_FOR_USAGE = b',"stream_options":{"include_usage":true}}'


def upstream_body(
    raw: bytes, body: dict[str, Any], upstream_model: str, *, asks_usage: bool
) -> bytes:
    """What the upstream gets: the client's bytes when nothing needs changing, else the
    body with the upstream's model name and, for streams, a request for usage.

    The common stream case (same model, no stream_options) appends the one member to
    the client's bytes instead of encoding the whole body again: a long conversation
    costs tens of microseconds to re-encode, on every request.
    """
    if body.get("model") == upstream_model:
        if not asks_usage:
            return raw
        if "stream_options" not in body:
            end = raw.rstrip()
            if end.endswith(b"}"):  # a parsed JSON object: its last byte closes it
                return end[:-1] + _ASK_FOR_USAGE
    forwarded = dict(body)
    forwarded["model"] = upstream_model
    if asks_usage:
        options = forwarded.get("stream_options")
        forwarded["stream_options"] = {
            **(options if isinstance(options, dict) else {}),
            "include_usage": True,
        }
    return json.dumps(forwarded).encode()
