"""Request bodies: the JSON object every POST route expects, and what the upstream gets."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from routstr_node.errors import ApiError, invalid_request


async def read_body(request: web.Request, max_bytes: int, idle_s: float) -> bytes:
    """The whole body, at most ``max_bytes`` (else 413), or 408 once no byte of it came
    for ``idle_s``: a slow upload that keeps sending is never cut, a stalled one is.

    The one way every JSON route reads its body (uploads take it chunk by chunk).
    """
    return b"".join([chunk async for chunk in body_chunks(request, max_bytes, idle_s)])


async def body_chunks(request: web.Request, max_bytes: int, idle_s: float) -> AsyncIterator[bytes]:
    """The body as it arrives, chunk by chunk, with read_body's bounds: 413 past
    ``max_bytes``, 408 once nothing came for ``idle_s``. A body that has fully arrived
    (the common case) is taken without a timer."""
    content = request.content
    size = 0
    while True:
        if content.is_eof():
            chunk = await content.readany()  # all of it is here: no waiting
        else:
            try:
                async with asyncio.timeout(idle_s):
                    chunk = await content.readany()
            except TimeoutError:
                # the rest is not waited for: not by aiohttp either, which would linger to
                # drain it (the answer then closes the connection: Connection: close)
                content.feed_eof()
                raise ApiError(
                    408,
                    "invalid_request_error",
                    "request_timeout",
                    f"the request body stopped arriving (nothing for {idle_s:g} s)",
                ) from None
        if not chunk:
            return
        size += len(chunk)
        if size > max_bytes:
            raise web.HTTPRequestEntityTooLarge(max_size=max_bytes, actual_size=size)
        yield chunk


# how deep a request body may nest: an OpenAI request goes a few levels (a message's
# content parts, a tool's JSON schema); deeper is refused before it is parsed
MAX_NESTING = 256
_NESTING = re.compile(rb'[\[\]{}]|"[^"\\]*(?:\\.[^"\\]*)*"')  # a bracket, or a string


def nested_deeper_than(raw: bytes, limit: int) -> bool:
    """Whether JSON text opens more than ``limit`` arrays and objects inside each other.

    Asked only of a text with more brackets than ``limit`` (a count in C): the parser's
    own recursion into a body nested as deep as it goes (100,000 levels) ran the cyclic
    collector's finalizers at the recursion limit, where they failed.
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    depth = 0
    for token in _NESTING.finditer(raw):
        mark = token.group()
        if mark in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        elif mark in (b"]", b"}"):
            depth -= 1
    return False


def parse_json_object(raw: bytes) -> dict[str, Any]:
    if nested_deeper_than(raw, MAX_NESTING):
        raise invalid_request(
            "invalid_json", f"the request body nests deeper than {MAX_NESTING} levels"
        )
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
