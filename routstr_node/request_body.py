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


def upstream_body(
    raw: bytes,
    body: dict[str, Any],
    upstream_model: str,
    *,
    asks_usage: bool,
    added: dict[str, Any] | None = None,
    removed: tuple[str, ...] = (),
) -> bytes:
    """What the upstream gets: the client's bytes when nothing needs changing, else the
    body with the upstream's model name, for streams a request for usage, the ``added``
    members (ones the client's body does not have), without the ``removed`` ones.

    When only new members are needed (same model, no stream_options to merge) they are
    appended to the client's bytes instead of encoding the whole body again: a long
    conversation costs tens of microseconds to re-encode, on every request.
    """
    new = dict(added or {})
    if asks_usage and "stream_options" not in body:
        new["stream_options"] = {"include_usage": True}
        asks_usage = False  # answered by the new member
    dropped = [key for key in removed if key in body]
    same = body.get("model") == upstream_model and not dropped
    if same and not asks_usage and new.keys().isdisjoint(body):
        if not new:
            return raw
        end = raw.rstrip()
        if end.endswith(b"}"):  # a parsed JSON object with a model: its last byte closes it
            members = json.dumps(new, separators=(",", ":")).encode()
            return end[:-1] + b"," + members[1:]
    forwarded = {**body, **new}
    forwarded["model"] = upstream_model
    for key in dropped:
        del forwarded[key]
    if asks_usage:
        options = forwarded.get("stream_options")
        forwarded["stream_options"] = {
            **(options if isinstance(options, dict) else {}),
            "include_usage": True,
        }
    return json.dumps(forwarded).encode()
