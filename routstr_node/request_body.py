"""Reading a request body as the JSON object every POST route of the node expects."""

from __future__ import annotations

import json
from typing import Any

from routstr_node.errors import invalid_request


def parse_json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError:
        raise invalid_request("invalid_json", "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise invalid_request("invalid_json", "the request body must be a JSON object")
    return body
