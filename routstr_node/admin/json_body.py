"""Admin request bodies: JSON a settings document can be made of, and nothing else.

What reaches the settings is copied, stored and shown again, so the body is held to
JSON a browser can read back: no NaN or Infinity, text that is valid UTF-8 (no lone
surrogates), and no deeper than a settings document goes.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from aiohttp import web

from routstr_node.errors import invalid_request
from routstr_node.request_body import nested_deeper_than, read_body
from routstr_node.state import NODE

MAX_DEPTH = 32  # node.toml's shape is four levels deep
# the admin's own body limit, apart from [limits] max_body_bytes: a limit set too low in
# the panel must not lock the panel itself out
MAX_BYTES = 1 << 20


async def admin_body(request: web.Request) -> bytes:
    return await read_body(request, MAX_BYTES, request.app[NODE].settings.limits.body_timeout_s)


def admin_json(raw: bytes) -> Any:
    """The parsed body; numbers with a fraction or exponent are exact Decimals."""
    if nested_deeper_than(raw, MAX_DEPTH):
        raise invalid_request("invalid_json", f"the body is nested deeper than {MAX_DEPTH}")
    try:
        value = json.loads(raw, parse_float=Decimal, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise invalid_request("invalid_json", "the request body is not valid JSON") from None
    _check(value)
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _check(value: Any) -> None:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise invalid_request("invalid_json", f"the body is nested deeper than {MAX_DEPTH}")
        if isinstance(item, str):
            _text(item)
        elif isinstance(item, dict):
            for key, member in item.items():
                _text(key)
                stack.append((member, depth + 1))
        elif isinstance(item, list):
            stack.extend((member, depth + 1) for member in item)


def _text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise invalid_request("invalid_json", "the body holds text that is not UTF-8") from None
