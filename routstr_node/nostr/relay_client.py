"""Talking to one Nostr relay over a websocket (NIP-01): publish an event, follow a
subscription. Failures are exceptions (``RelayError``, aiohttp's, ``TimeoutError``);
retrying is the caller's job.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from routstr_node.nostr.event import Event

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
PUBLISH_TIMEOUT_S = 15.0  # connecting, sending and the relay's OK
# a relay's frame holds one event; an announcement is at most 64 KiB of content, so a
# frame far beyond that is not worth reading (the connection ends, a retry follows)
MAX_FRAME_BYTES = 1024 * 1024
HEARTBEAT_S = 30.0  # a relay that went away silently is noticed within this


class RelayError(Exception):
    """The relay refused, answered something unusable or ended the subscription."""


class EndOfStoredEvents:
    """Marker: the relay has sent what it stored; live events follow."""


EOSE = EndOfStoredEvents()


@asynccontextmanager
async def _connected(
    session: aiohttp.ClientSession, url: str
) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    async with asyncio.timeout(CONNECT_TIMEOUT_S):
        ws = await session.ws_connect(
            url,
            timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
            heartbeat=HEARTBEAT_S,
            max_msg_size=MAX_FRAME_BYTES,
        )
    try:
        yield ws
    finally:
        await ws.close()


def _message(msg: aiohttp.WSMessage) -> list[Any] | None:
    """A relay message as a JSON array (None for one not worth reading)."""
    if msg.type is aiohttp.WSMsgType.ERROR:
        raise RelayError(f"connection failed: {type(msg.data).__name__}")
    if msg.type is not aiohttp.WSMsgType.TEXT:
        return None
    try:
        data = json.loads(msg.data)
    except (ValueError, RecursionError):  # RecursionError: nested past Python's depth
        return None
    return data if isinstance(data, list) and data and isinstance(data[0], str) else None


def _text(value: object) -> str:
    """A relay's free-text reason, short and on one line, for a log."""
    return str(value)[:200].replace("\n", " ")


async def publish(session: aiohttp.ClientSession, url: str, event: Event) -> None:
    """Send ``event`` and wait for the relay's ``["OK", id, true, …]``."""
    async with asyncio.timeout(PUBLISH_TIMEOUT_S), _connected(session, url) as ws:
        await ws.send_str(json.dumps(["EVENT", event.to_json()], ensure_ascii=False))
        async for msg in ws:
            data = _message(msg)
            if data is None:
                continue
            if data[0] == "OK" and len(data) >= 3 and data[1] == event.id:
                reason = str(data[3]) if len(data) > 3 else ""
                # NIP-01: "duplicate:" means the relay has it already, which is the aim
                if data[2] is True or reason.startswith("duplicate:"):
                    return
                raise RelayError(f"refused the event: {_text(reason)}")
            if data[0] == "NOTICE":
                log.debug("nostr relay %s notice: %s", url, _text(data[1:]))
        raise RelayError("closed the connection before answering")


async def subscribe(
    session: aiohttp.ClientSession, url: str, subscription: str, *filters: dict[str, Any]
) -> AsyncIterator[object | EndOfStoredEvents]:
    """The events a REQ delivers (raw, unchecked), ``EOSE`` between stored and live ones;
    with several filters, the events that match any of them.

    Runs until the relay closes the connection or the subscription (``RelayError``).
    """
    async with _connected(session, url) as ws:
        await ws.send_str(json.dumps(["REQ", subscription, *filters]))
        async for msg in ws:
            data = _message(msg)
            if data is None or len(data) < 2 or data[1] != subscription:
                if data is not None and data[0] == "NOTICE":
                    log.debug("nostr relay %s notice: %s", url, _text(data[1:]))
                continue
            if data[0] == "EVENT" and len(data) >= 3:
                yield data[2]
            elif data[0] == "EOSE":
                yield EOSE
            elif data[0] == "CLOSED":
                raise RelayError(f"closed the subscription: {_text(data[2:])}")
        raise RelayError("closed the connection")
