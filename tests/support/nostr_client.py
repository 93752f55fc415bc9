"""A plain Nostr client for tests: what a relay holds, publishing raw events, keys."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import bech32

DEADLINE_S = 30.0
T = TypeVar("T")


async def query(relay_url: str, filters: dict[str, Any]) -> list[dict[str, Any]]:
    """The stored events a REQ returns (up to EOSE)."""
    events: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as session, session.ws_connect(relay_url) as ws:
        await ws.send_str(json.dumps(["REQ", "test", filters]))
        async with asyncio.timeout(DEADLINE_S):
            async for msg in ws:
                data = json.loads(msg.data)
                if data[0] == "EVENT" and data[1] == "test":
                    events.append(data[2])
                elif data[0] == "EOSE":
                    break
    return events


async def send(relay_url: str, event: dict[str, Any]) -> list[Any]:
    """Publish ``event`` as it is (forged ones too); the relay's OK message."""
    async with aiohttp.ClientSession() as session, session.ws_connect(relay_url) as ws:
        await ws.send_str(json.dumps(["EVENT", event]))
        async with asyncio.timeout(DEADLINE_S):
            async for msg in ws:
                data = json.loads(msg.data)
                if data[0] == "OK" and data[1] == event["id"]:
                    return list(data)
    raise AssertionError("the relay closed without an OK")


async def eventually(
    probe: Callable[[], Awaitable[T | None]], what: str, deadline_s: float = DEADLINE_S
) -> T:
    """Poll ``probe`` until it returns something (not None); fail after the deadline."""
    end = time.monotonic() + deadline_s
    while True:
        found = await probe()
        if found is not None:
            return found
        if time.monotonic() > end:
            raise AssertionError(f"not seen within {deadline_s} s: {what}")
        await asyncio.sleep(0.1)


def hex_of_npub(npub: str) -> str:
    prefix, words = bech32.bech32_decode(npub)
    assert prefix == "npub" and words is not None
    data = bech32.convertbits(words, 5, 8, False)
    assert data is not None
    return bytes(data).hex()
