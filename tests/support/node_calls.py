"""One way the wallet-API tests talk to a node: a JSON call with an optional Bearer key."""

from __future__ import annotations

from typing import Any

import aiohttp


async def call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    key: str | None = None,
    body: Any = None,
    raw: bytes | None = None,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """(status, JSON body); every answer of the node must carry X-Request-Id."""
    sent = dict(headers or {})
    if key is not None:
        sent["Authorization"] = f"Bearer {key}"
    async with http.request(
        method, url, json=body if raw is None else None, data=raw, params=params, headers=sent
    ) as resp:
        assert "X-Request-Id" in resp.headers
        return resp.status, await resp.json()
