"""Relaying a stream as it arrives, then the usage event with the cost (and change).

Events are passed on one by one the moment they are complete, each naming the model
as the node sells it. The upstream's own usage event and ``[DONE]`` are held back:
the node settles first, then ends the stream with one usage event (``choices: []``)
carrying ``usage.cost``, the provider and, for X-Cashu, ``cashu_change``; on
/v1/responses that is the API's own final event (``response.completed``), with those
keys added. Nothing is sent to the client before the first upstream event, so a
provider that fails before it is failed over (or, the last, becomes a plain error);
once a byte went out, the stream is this provider's to the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import aiohttp
from aiohttp import web

from routstr_node.errors import upstream_failed, upstream_status_error, upstream_timeout
from routstr_node.failover import UpstreamFailure, open_answer
from routstr_node.paid_call import PaidCall
from routstr_node.pricing import Cost
from routstr_node.records import Counted
from routstr_node.routing import Candidate
from routstr_node.sse import DONE, encode_event
from routstr_node.state import COUNTED_STREAM, RESPONSE_HEADERS
from routstr_node.stream_answer import StreamAnswer
from routstr_node.token_answer import TokenRequest, cost_at, cost_json
from routstr_node.upstream import Payload, Upstream
from routstr_node.usage import TokenUsage

_CLIENT_GONE = (ConnectionError, aiohttp.ClientConnectionResetError)


async def relay_stream(
    request: web.Request,
    call: PaidCall,
    token_request: TokenRequest,
    candidate: Candidate,
    upstream: Upstream,
    payload: Payload,
) -> web.StreamResponse:
    node, name = call.node, candidate.name
    opened = await open_answer(
        node, token_request.model_id, upstream, token_request.path, payload, stream=True
    )
    upstream_resp = opened.response
    response: web.StreamResponse | None = None
    state = StreamAnswer(token_request, candidate, token_request.renamer())
    session = token_request.session
    upstream_broke: str | None = None
    client_gone = False
    first_byte: float | None = None
    try:
        if upstream_resp.status >= 400:
            raise upstream_status_error(
                name,
                upstream_resp.status,
                await upstream_resp.read(),
                upstream_resp.headers.get("Retry-After"),
            )
        chunks = upstream_resp.content.iter_any().__aiter__()
        while not state.done:  # a cancellation (shutdown) still pays for what was delivered
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                break
            except TimeoutError:
                if response is None:
                    raise UpstreamFailure(upstream_timeout(name)) from None
                upstream_broke = "TimeoutError"
                break
            except (aiohttp.ClientError, asyncio.IncompleteReadError) as exc:
                upstream_broke = type(exc).__name__
                break
            out = state.feed(chunk)
            del chunk  # a block is up to 128 KiB: not held while the next one is awaited
            if not out:
                continue
            if session is not None:
                out = session.tag_events(out)
            call.relayed(state)
            try:
                if response is None:
                    first_byte = call.first_byte_at = time.perf_counter()
                    response = await _start(request, call)
                await response.write(out)
            except _CLIENT_GONE:
                client_gone = True
                break
            del out
        if response is None and (upstream_broke or state.nothing_came):
            why = upstream_broke or "the stream ended empty"
            raise UpstreamFailure(upstream_failed(name, why))
    finally:
        upstream_resp.release()

    usage = state.token_usage()
    # no output reached the client: nothing is charged (a client gone early)
    cost = await asyncio.shield(
        call.settle(cost_at(candidate, usage), Counted(usage.input_tokens, usage.output_tokens))
        if usage is not None
        else call.settle(Cost(0, 0, 0))
    )
    if usage is None:
        usage = TokenUsage(0, 0, False)
    elif first_byte is not None and not upstream_broke and not client_gone:
        seconds = time.perf_counter() - first_byte
        node.board.generated(name, token_request.model_id, usage.output_tokens, seconds)
    if client_gone:
        return response if response is not None else web.Response(status=499)
    if response is None:
        response = await _start(request, call)
    if session is not None and call.payer is not None and not upstream_broke:
        await session.keep(call.payer.account_id, session.streamed_answer())
    # the final events and the stream's end in one write (one send, not two)
    with contextlib.suppress(*_CLIENT_GONE):
        await response.write_eof(_final_events(call, state, usage, cost, upstream_broke))
    return response


async def _start(request: web.Request, call: PaidCall) -> web.StreamResponse:
    response = web.StreamResponse(
        status=200,
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
            **request.get(RESPONSE_HEADERS, {}),
            **call.answer_headers(),
        },
    )
    await response.prepare(request)
    call.node.metrics.open_streams += 1
    request[COUNTED_STREAM] = True  # the outer middleware counts it down at the end
    return response


def _final_events(
    call: PaidCall, state: StreamAnswer, usage: TokenUsage, cost: Cost, upstream_broke: str | None
) -> bytes:
    request = state.request
    usage_obj = {**request.usage_fields(usage), **state.usage_extra, "cost": cost_json(cost)}
    provider = state.candidate.name
    out = b""
    if upstream_broke:  # before the usage event: that one is the stream's last before [DONE]
        error: dict[str, Any] = {
            "message": f"the upstream stream broke off ({upstream_broke})",
            "type": "upstream_error",
            "code": "upstream_error",
            "param": None,
        }
        if request.session is not None:
            error["session_id"] = request.session.id
        if call.change_token:
            # the SDKs raise on this event and never read the usage event after it: the
            # same change is in the error too, where the exception's body shows it
            error["cashu_change"] = call.change_token
        out += encode_event({"error": error})
    final = state.final_response_event
    if final is not None and isinstance(final.get("response"), dict):
        # the Responses API's own last event is the usage event: an event of a type of its
        # own would break the SDKs' stream helpers (the JavaScript one throws on it)
        final["response"]["usage"] = usage_obj
        final["response"]["model"] = request.model_id
        final.update({"choices": [], "usage": usage_obj, "provider": provider})
        if request.session is not None:
            final["session_id"] = request.session.id
        if call.change_token:
            final["cashu_change"] = call.change_token
        return out + encode_event(final, event=str(final.get("type"))) + DONE
    usage_event: dict[str, Any] = {
        "id": state.meta.get("id", ""),
        "object": state.meta.get("object", "chat.completion.chunk"),
        "created": state.meta.get("created", int(time.time())),
        "model": request.model_id,
        "provider": provider,
        "choices": [],
        "usage": usage_obj,
    }
    if request.session is not None:
        usage_event["session_id"] = request.session.id
    if call.change_token:
        usage_event["cashu_change"] = call.change_token
    return out + encode_event(usage_event) + DONE
