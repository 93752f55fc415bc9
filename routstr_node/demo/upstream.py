"""A fake OpenAI-compatible AI provider served by aiohttp.

The node's demo and tests cannot reach a real provider, so this one stands in for it:
real HTTP, OpenAI's JSON and SSE framing, deterministic echo replies with `usage`, and
knobs for the failures a real provider produces (errors, delays, cut connections).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from aiohttp.typedefs import Handler
from multidict import CIMultiDict

from routstr_node.demo.behaviour import (
    BEHAVIOUR_KEY,
    RECORD_KEY,
    RecordedRequest,
    UpstreamBehaviour,
)
from routstr_node.demo.media_upstream import add_media_routes, is_public, is_upload
from routstr_node.demo.openai_replies import (
    chat_body,
    chat_stream,
    completion_body,
    completion_stream,
    embeddings_body,
    models_body,
    response_body,
    response_stream,
)
from routstr_node.demo.openai_requests import (
    IMAGE_TOKENS,
    ApiError,
    JSONObject,
    Reply,
    count_tokens,
    parse_chat,
    parse_completion,
    parse_json_object,
    parse_response,
    status_error,
)

__all__ = [
    "BEHAVIOUR_KEY",
    "IMAGE_TOKENS",
    "RETRY_AFTER_S",
    "RecordedRequest",
    "RunningUpstream",
    "UpstreamBehaviour",
    "count_tokens",
    "create_upstream_app",
    "run_upstream",
]

SHUTDOWN_TIMEOUT_S = 1.0


RETRY_AFTER_S = 20  # what a rate-limited provider asks for


def _error_response(error: ApiError) -> web.Response:
    headers = {"Retry-After": str(RETRY_AFTER_S)} if error.status == 429 else None
    return web.json_response(error.body(), status=error.status, headers=headers)


def _check_api_key(request: web.Request, expected: str | None) -> None:
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise ApiError(
            401,
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        )
    if expected is not None and key != expected:
        raise ApiError(401, f"Incorrect API key provided: {key[:4]}****.", code="invalid_api_key")


@web.middleware
async def _provider_gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Record the request, then apply delay, auth and forced failure like a provider."""
    behaviour = request.app[BEHAVIOUR_KEY]
    raw = b"" if is_upload(request) else await request.read()  # an upload: read as it comes
    try:
        parsed: Any = parse_json_object(raw) if raw else None
    except ApiError:
        parsed = None
    headers = CIMultiDict(request.headers)
    record = RecordedRequest(request.method, request.path, headers, raw, parsed)
    behaviour.requests.append(record)
    request[RECORD_KEY] = record
    if behaviour.delay_s > 0:
        await asyncio.sleep(behaviour.delay_s)
    try:
        if not is_public(request):
            _check_api_key(request, behaviour.expected_api_key)
        if behaviour.fail_status is not None:
            raise status_error(behaviour.fail_status)
        for name in behaviour.unknown_params:
            if isinstance(parsed, dict) and name in parsed:
                raise ApiError(400, f"Unrecognized request argument supplied: {name}")
        return await handler(request)
    except ApiError as error:
        return _error_response(error)


async def _body(request: web.Request) -> JSONObject:
    return parse_json_object(await request.read())


async def _send_stream(
    request: web.Request, events: list[bytes], behaviour: UpstreamBehaviour
) -> web.StreamResponse:
    """Write SSE events; with `cut_after_chunks`, drop the connection mid-stream."""
    cut_after = behaviour.cut_after_chunks
    chunk_delay = behaviour.chunk_delay_s
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
    )
    response.enable_chunked_encoding()
    await response.prepare(request)
    for index, event in enumerate(events):
        if cut_after is not None and index >= cut_after:
            _drop_connection(request)
            return response
        if index > 0 and chunk_delay > 0:
            await asyncio.sleep(chunk_delay)
        await response.write(event)
    await response.write_eof()
    return response


def _drop_connection(request: web.Request) -> None:
    """Close the socket after what was written, without the final chunk or [DONE]."""
    transport = request.transport
    if transport is not None:
        transport.close()


class _Parse(Protocol):
    def __call__(self, body: JSONObject, forced_words: int | None) -> Reply: ...


class _Render(Protocol):
    def __call__(self, reply: Reply, *, with_usage: bool) -> JSONObject: ...


class _RenderStream(Protocol):
    def __call__(self, reply: Reply, *, with_usage: bool) -> list[bytes]: ...


def _endpoint(parse: _Parse, render: _Render, render_stream: _RenderStream) -> Handler:
    """A generation endpoint: parse, then answer with a JSON body or an SSE stream."""

    async def handle(request: web.Request) -> web.StreamResponse:
        behaviour = request.app[BEHAVIOUR_KEY]
        reply = parse(await _body(request), behaviour.reply_words)
        with_usage = not behaviour.omit_usage
        if reply.stream:
            events = render_stream(reply, with_usage=with_usage)
            return await _send_stream(request, events, behaviour)
        return web.json_response(render(reply, with_usage=with_usage))

    return handle


async def _embeddings(request: web.Request) -> web.StreamResponse:
    behaviour = request.app[BEHAVIOUR_KEY]
    body = await _body(request)
    return web.json_response(embeddings_body(body, with_usage=not behaviour.omit_usage))


async def _models(request: web.Request) -> web.StreamResponse:
    return web.json_response(models_body(request.app[BEHAVIOUR_KEY].models))


async def _unknown(request: web.Request) -> web.StreamResponse:
    raise ApiError(404, f"Invalid URL ({request.method} {request.path})")


def create_upstream_app(behaviour: UpstreamBehaviour | None = None) -> web.Application:
    """The fake provider; its `UpstreamBehaviour` sits under `BEHAVIOUR_KEY`."""
    app = web.Application(middlewares=[_provider_gate])
    app[BEHAVIOUR_KEY] = behaviour if behaviour is not None else UpstreamBehaviour()
    app.router.add_post("/v1/chat/completions", _endpoint(parse_chat, chat_body, chat_stream))
    app.router.add_post(
        "/v1/completions", _endpoint(parse_completion, completion_body, completion_stream)
    )
    app.router.add_post("/v1/responses", _endpoint(parse_response, response_body, response_stream))
    app.router.add_post("/v1/embeddings", _embeddings)
    app.router.add_get("/v1/models", _models)
    add_media_routes(app)
    app.router.add_route("*", "/{tail:.*}", _unknown)
    return app


@dataclass(frozen=True)
class RunningUpstream:
    """A fake provider listening on loopback; `url` is its OpenAI base URL (…/v1)."""

    url: str
    host: str
    port: int
    app: web.Application

    @property
    def behaviour(self) -> UpstreamBehaviour:
        return self.app[BEHAVIOUR_KEY]

    @property
    def requests(self) -> list[RecordedRequest]:
        return self.behaviour.requests


@asynccontextmanager
async def run_upstream(
    host: str = "127.0.0.1", port: int = 0, behaviour: UpstreamBehaviour | None = None
) -> AsyncIterator[RunningUpstream]:
    """Serve the fake provider on `host`; port 0 picks a free port."""
    app = create_upstream_app(behaviour)
    runner = web.AppRunner(app, shutdown_timeout=SHUTDOWN_TIMEOUT_S, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = int(runner.addresses[0][1])
        yield RunningUpstream(
            url=f"http://{host}:{bound_port}/v1", host=host, port=bound_port, app=app
        )
    finally:
        await runner.cleanup()
