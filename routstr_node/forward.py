"""A token route's non-streaming answer: read it whole, settle, name model and provider.

Nothing reaches the client before the answer is read whole, so a provider that fails
while sending it is failed over like one that never answered.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web

from routstr_node.answer_tail import usage_at_the_end
from routstr_node.errors import upstream_status_error
from routstr_node.failover import open_answer, read_answer
from routstr_node.paid_call import PaidCall
from routstr_node.pricing import Cost
from routstr_node.records import Counted
from routstr_node.routing import Candidate
from routstr_node.sessions import answer_message
from routstr_node.token_answer import TokenRequest, cost_at, cost_json
from routstr_node.upstream import Payload, Upstream
from routstr_node.usage import TokenUsage, reported_usage, response_text

ON_LOOP_BYTES = 256 * 1024
R = TypeVar("R")


async def off_loop_if_big(size: int, fn: Callable[..., R], *args: Any) -> R:
    """``fn(*args)`` here, or in a thread for a body of over ON_LOOP_BYTES.

    The json module holds the GIL for a whole call, so the thread shortens the event
    loop's stall rather than removing it (measured on 11.6 MB: 206 ms on the loop, 100 in
    a thread). Large answers avoid the parse altogether (answer_tail)."""
    if size <= ON_LOOP_BYTES:
        return fn(*args)
    return await asyncio.to_thread(fn, *args)


async def forward(
    call: PaidCall,
    request: TokenRequest,
    candidate: Candidate,
    upstream: Upstream,
    payload: Payload,
) -> web.Response:
    node, name = call.node, candidate.name
    opened = await open_answer(
        node, request.model_id, upstream, request.path, payload, stream=False
    )
    raw = await read_answer(opened, name)
    resp = opened.response
    status = resp.status
    if status >= 400:
        raise upstream_status_error(name, status, raw, resp.headers.get("Retry-After"))
    # a large answer has only its usage rewritten; one in a session is read whole (its
    # message is kept)
    large = len(raw) > ON_LOOP_BYTES and request.session is None
    tail = usage_at_the_end(raw) if large else None
    tail_counts = reported_usage(tail.usage) if tail is not None else None
    if tail is not None and tail_counts is not None:  # large: only its usage is rewritten
        usage = TokenUsage(tail_counts[0], tail_counts[1], True)
        cost = await _settle(call, request, candidate, usage, opened.started)
        body = tail.with_usage(
            raw,
            {**tail.usage, "cost": cost_json(cost)},
            after={"provider": name},
            edit=request.renamer(),
        )
        return _json_answer(body, status, call.answer_headers())
    data = await off_loop_if_big(len(raw), _json_or_none, raw)
    counts = reported_usage(data.get("usage")) if isinstance(data, dict) else None
    usage = (
        TokenUsage(counts[0], counts[1], True)
        if counts
        else request.own_count(
            response_text(data) if data is not None else raw.decode("utf-8", "replace")
        )
    )
    cost = await _settle(call, request, candidate, usage, opened.started)
    headers = call.answer_headers()
    if isinstance(data, dict):
        found = data.get("usage")
        usage_obj: dict[str, Any] = found if isinstance(found, dict) else {}
        if not counts:
            usage_obj = {**request.usage_fields(usage), **usage_obj}
        data["usage"] = {**usage_obj, "cost": cost_json(cost)}
        data["model"] = request.model_id
        data["provider"] = name
        if request.session is not None and call.payer is not None:
            data["session_id"] = request.session.id
            await request.session.keep(call.payer.account_id, answer_message(data))
        return _json_answer(await off_loop_if_big(len(raw), _json_bytes, data), status, headers)
    return web.Response(body=raw, status=status, content_type=resp.content_type, headers=headers)


async def _settle(
    call: PaidCall,
    request: TokenRequest,
    candidate: Candidate,
    usage: TokenUsage,
    started: float,
) -> Cost:
    cost = await call.settle(
        cost_at(candidate, usage), Counted(usage.input_tokens, usage.output_tokens)
    )
    seconds = time.perf_counter() - started  # a whole answer: written before its first byte
    call.node.board.generated(candidate.name, request.model_id, usage.output_tokens, seconds)
    return cost


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def _json_bytes(data: Any) -> bytes:
    return json.dumps(data).encode()


def _json_answer(body: bytes, status: int, headers: dict[str, str]) -> web.Response:
    return web.Response(
        body=body, status=status, headers=headers, content_type="application/json", charset="utf-8"
    )
