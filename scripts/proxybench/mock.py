"""The fast mock upstream (OpenAI-shaped, a stream of 8 events), and the two floors the
node is compared with: a bare aiohttp pass-through and a raw TCP relay."""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import aiohttp
from aiohttp import web

from proxybench import (
    FAIL_MODEL,
    HOLD_MODEL,
    LONG_EVENTS,
    LONG_MODEL,
    LOOPBACK,
    MODEL,
    SSE_EVENTS,
    SSE_MODEL,
    UPSTREAM_KEY,
)

_CHAT = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": MODEL,
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello from the mock upstream."},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15},
}
CHAT_BODY = json.dumps(_CHAT, separators=(",", ":")).encode()
FAILED = {"error": {"message": "The server had an error", "type": "server_error", "code": None}}


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def _chunk(content: str | None, finish: str | None = None) -> bytes:
    delta = {"content": content} if content is not None else {}
    return _event(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
    )


STREAM_EVENTS = [
    _chunk("Hello"),
    _chunk(" from"),
    _chunk(" the"),
    _chunk(" mock"),
    _chunk(" upstream."),
    _chunk(None, "stop"),
    _event(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": MODEL,
            "choices": [],
            "usage": {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14},
        }
    ),
    b"data: [DONE]\n\n",
]


def _openai_chunk(i: int) -> bytes:
    """A chat chunk as OpenAI streams it with include_usage: "usage": null on each."""
    return _event(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": MODEL,
            "system_fingerprint": "fp_bench",
            "choices": [
                {"index": 0, "delta": {"content": f" word{i}"}, "logprobs": None,
                 "finish_reason": None}
            ],
            "usage": None,
        }
    )  # fmt: skip


def _openai_stream(events: int) -> tuple[bytes, bytes]:
    """(the answer's events, its end: the usage event and [DONE]) of ``events`` chunks."""
    body = b"".join(_openai_chunk(i) for i in range(events))
    end = _event(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": MODEL,
            "choices": [],
            "usage": {"prompt_tokens": 9, "completion_tokens": events, "total_tokens": events + 9},
        }
    )
    return body, end + b"data: [DONE]\n\n"


SSE_ANSWER = _openai_stream(SSE_EVENTS)
LONG_ANSWER = _openai_stream(LONG_EVENTS)
_WRITE_BYTES = 16 * 1024  # an upstream writes its stream in pieces, not in one send

RELEASE = web.AppKey("release", asyncio.Event)


async def _upstream_chat(request: web.Request) -> web.StreamResponse:
    if request.headers.get("Authorization") != f"Bearer {UPSTREAM_KEY}":
        return web.json_response({"error": {"message": "bad key"}}, status=401)
    body = json.loads(await request.read())
    if body.get("model") == FAIL_MODEL:
        return web.json_response(FAILED, status=500)
    if not body.get("stream"):
        return web.Response(body=CHAT_BODY, content_type="application/json")
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    if body.get("model") in (SSE_MODEL, LONG_MODEL):
        events_body, end = SSE_ANSWER if body["model"] == SSE_MODEL else LONG_ANSWER
        for at in range(0, len(events_body), _WRITE_BYTES):
            await response.write(events_body[at : at + _WRITE_BYTES])
        if body["model"] == LONG_MODEL:
            await request.app[RELEASE].wait()
        await response.write(end)
        await response.write_eof()
        return response
    events = STREAM_EVENTS
    if body.get("model") == HOLD_MODEL:
        await response.write(events[0])
        await request.app[RELEASE].wait()
        events = events[1:]
    for event in events:
        await response.write(event)
    await response.write_eof()
    return response


async def _upstream_control(request: web.Request) -> web.Response:
    release = request.app[RELEASE]
    if request.match_info["what"] == "release":
        release.set()
    else:
        release.clear()
    return web.Response(text="ok")


async def _upstream_health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _serve_until_signal(app: web.Application, port: int) -> None:
    """Serve ``app`` on loopback until SIGTERM or SIGINT."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, LOOPBACK, port, backlog=4096).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


async def serve_upstream(port: int) -> None:
    """The mock upstream, until SIGTERM."""
    app = web.Application()
    app[RELEASE] = asyncio.Event()
    app.router.add_post("/v1/chat/completions", _upstream_chat)
    app.router.add_post("/control/{what}", _upstream_control)
    app.router.add_get("/health", _upstream_health)
    await _serve_until_signal(app, port)


async def serve_bare_proxy(port: int, upstream_url: str) -> None:
    """The floor: a bare aiohttp pass-through (no payment, no JSON parsing), until SIGTERM.

    Forwards the body to the upstream on a pooled session and relays the answer (a
    stream chunk by chunk), so the node's figures can be read against what one
    aiohttp proxy hop costs on this machine.
    """
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    headers = {"Authorization": f"Bearer {UPSTREAM_KEY}", "Content-Type": "application/json"}

    async def forward(request: web.Request) -> web.StreamResponse:
        data = await request.read()
        async with session.post(
            upstream_url + "/chat/completions", data=data, headers=headers
        ) as up:
            if up.content_type != "text/event-stream":
                raw = await up.read()
                return web.Response(body=raw, status=up.status, content_type=up.content_type)
            response = web.StreamResponse(
                status=up.status, headers={"Content-Type": "text/event-stream"}
            )
            await response.prepare(request)
            async for chunk in up.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", forward)
    app.router.add_get("/health", _upstream_health)
    await _serve_until_signal(app, port)
    await session.close()


class _Pipe(asyncio.Protocol):
    """One direction of a relayed connection: bytes in here go out on ``peer``."""

    def __init__(self, peer: _Pipe | None = None) -> None:
        self.peer = peer
        self.transport: asyncio.Transport | None = None
        self.pending: list[bytes] = []  # what arrived before the other side was connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)
        else:
            self.pending.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


async def serve_tcp_relay(port: int, upstream_port: int) -> None:
    """The floor of one more process on the path: bytes relayed, no HTTP, until SIGTERM.

    Each client connection gets its own upstream connection; what the relay adds at
    concurrency 1 is what any proxy process costs on this machine (two more loopback
    hops and wake-ups), so the bare proxy's figure beyond it is aiohttp's own.
    """
    loop = asyncio.get_running_loop()

    class _Front(_Pipe):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self.connecting = loop.create_task(self._connect())

        async def _connect(self) -> None:
            try:
                _, back = await loop.create_connection(lambda: _Pipe(self), LOOPBACK, upstream_port)
            except OSError:
                if self.transport is not None:
                    self.transport.close()
                return
            self.peer = back
            assert back.transport is not None
            for data in self.pending:
                back.transport.write(data)
            self.pending.clear()

    server = await loop.create_server(_Front, LOOPBACK, port, backlog=4096)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
