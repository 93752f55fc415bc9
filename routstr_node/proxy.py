"""Paid, OpenAI-compatible requests: check, reserve, forward, settle, return change.

A request is validated before any money moves; the payer's most possible cost is
reserved; the upstream's answer (or its stream) is relayed; the real cost from
``usage`` is charged and the rest released exactly once, also when the client or the
upstream goes away (the settlement runs shielded from cancellation).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

from routstr_node.answer_tail import usage_at_the_end
from routstr_node.call import (
    PaidCall,
    change_for,
    cost_json,
    upstream_failed,
    upstream_status_error,
    upstream_timeout,
    usage_fields,
)
from routstr_node.errors import ApiError, invalid_request, not_found
from routstr_node.payment import payment_required, resolve_payer
from routstr_node.pricing import Cost, PriceUnavailable, max_cost_msat
from routstr_node.relay import relay_stream
from routstr_node.request_body import parse_json_object, read_body, upstream_body
from routstr_node.state import NODE
from routstr_node.upstream import Payload, Upstream
from routstr_node.usage import (
    MAX_CHOICES,
    OUTPUT_CAP_KEYS,
    TokenUsage,
    input_sequences,
    reads_beyond_body,
    reported_usage,
    requested_choices,
    requested_max_output,
    response_text,
)
from wallet.errors import InsufficientBalance

log = logging.getLogger(__name__)

PROXIED_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses")
STREAMING_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/responses")
_MAX_OUTPUT_TOKENS = 100_000_000  # no model writes more; bounds the reservation
_ON_LOOP_BYTES = 256 * 1024
R = TypeVar("R")
# an error after an X-Cashu token was redeemed: the OpenAI SDKs retry 5xx and 429, and
# a retry would send the spent token again and lose sight of this answer's change
_SPENT_TOKEN = {"X-Should-Retry": "false"}
_REQUIRED_INPUT = {
    "/v1/chat/completions": ("messages", "messages_required"),
    "/v1/completions": ("prompt", "prompt_required"),
    "/v1/embeddings": ("input", "input_required"),
    "/v1/responses": ("input", "input_required"),
}


async def handle_proxy(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE]
    path = request.path
    limits = node.settings.limits
    raw = await read_body(request, limits.max_body_bytes, limits.body_timeout_s)
    body = await _off_loop_if_big(len(raw), parse_json_object, raw)
    model_id = body.get("model")
    if not isinstance(model_id, str) or not model_id:
        raise invalid_request("model_required", "the request must name a model", param="model")
    field_name, code = _REQUIRED_INPUT[path]
    given = body.get(field_name)
    # OpenAI's shapes: chat takes a list of messages; an empty completions prompt is fine
    empty = given is None or given == [] or (given == "" and path != "/v1/completions")
    if empty or (path == "/v1/chat/completions" and not isinstance(given, list)):
        raise invalid_request(
            code, f"the request must carry '{field_name}' (see the API reference)", param=field_name
        )
    model = node.settings.model(model_id)
    upstream = node.upstreams.get(model.upstream) if model is not None else None
    if model is None or upstream is None:
        raise not_found("model_not_available", f"the model '{model_id}' is not available here")
    try:
        price = await node.price(model_id)
    except PriceUnavailable as exc:
        raise ApiError(503, "api_error", "price_unavailable", str(exc)) from None
    assert price is not None
    stream = body.get("stream") is True and path in STREAMING_PATHS
    if path in STREAMING_PATHS and not isinstance(body.get("stream"), bool | None):
        # "true" or 1 would be a stream to the node and maybe not to the upstream
        raise invalid_request("invalid_stream", "stream must be true or false", param="stream")
    max_output = requested_max_output(path, body)
    if max_output is not None and not 0 < max_output <= _MAX_OUTPUT_TOKENS:
        raise invalid_request(
            "invalid_max_tokens",
            f"max_tokens must be an integer from 1 to {_MAX_OUTPUT_TOKENS}",
            param="max_tokens",
        )
    choices = requested_choices(path, body)
    if not choices:
        raise invalid_request(
            "invalid_n", f"n and best_of must be integers from 1 to {MAX_CHOICES}", param="n"
        )
    # each input the upstream bills apart may fill the context; what it bills beyond the
    # request's bytes (media, stored state) is bounded by that alone
    context = model.context_length * input_sequences(path, body)
    prompt_bound = context if reads_beyond_body(path, raw, body) else min(len(raw), context)
    per_choice = price.max_output_tokens if max_output is None else max_output
    output_bound = 0 if path == "/v1/embeddings" else per_choice * choices
    most = max_cost_msat(price, prompt_bound, output_bound)

    # built before any money moves: between the reservation and the try below that
    # settles it, nothing may wait
    forwarded = await _off_loop_if_big(
        len(raw),
        _payload,
        raw,
        body,
        model.upstream_model or model.id,
        path,
        stream,
        max_output,
        per_choice,
    )
    payer = await resolve_payer(request, node, most)
    try:
        reservation_id = (
            payer.reservation_id  # X-Cashu: held with the token's credit
            if payer.reservation_id is not None
            else await node.wallet.ledger.reserve(payer.account_id, most)
        )
    except InsufficientBalance as exc:
        headers: dict[str, str] = {}
        if payer.mode == "xcashu":
            headers.update(_SPENT_TOKEN)
            change = await change_for(node, payer)
            if change:
                headers["X-Cashu-Change"] = change
        # the NUT-18 request asks for the whole request: paid as X-Cashu, a token pays
        # for its own request alone, so a token worth only the shortfall would not do
        error = payment_required(
            node,
            most,
            f"insufficient balance: this request may cost up to {most} msat,"
            f" {exc.available_msat} msat are available",
            code="insufficient_balance",
        )
        error.headers.update(headers)
        raise error from None

    call = PaidCall(node, path, body, price, payer, reservation_id, most)
    try:
        with upstream.in_use():  # a settings change closes its session only after this
            if stream:
                return await relay_stream(request, call, upstream, forwarded)
            return await _forward(call, upstream, forwarded)
    except ApiError as error:
        # the upstream failed before any output: nothing is charged, X-Cashu comes back whole
        await asyncio.shield(call.settle(None))
        if payer.mode == "xcashu":
            error.headers.update(_SPENT_TOKEN)
        if call.change_token:
            error.headers["X-Cashu"] = call.change_token
        raise
    finally:
        if not call.settled:
            await asyncio.shield(call.settle(None))


def _payload(
    raw: bytes,
    body: dict[str, Any],
    upstream_model: str,
    path: str,
    stream: bool,
    max_output: int | None,
    per_choice: int,
) -> Payload:
    """The upstream's body. What was reserved for is what the upstream may write: a
    request without a cap gets the model's, under its endpoint's name (and goes as it
    came if the upstream does not know that name)."""
    asks_usage = stream and path != "/v1/responses"
    plain = upstream_body(raw, body, upstream_model, asks_usage=asks_usage)
    if max_output is not None or path not in OUTPUT_CAP_KEYS:
        return Payload(plain)
    cap = OUTPUT_CAP_KEYS[path][0]
    capped = upstream_body(
        raw, body, upstream_model, asks_usage=asks_usage, added={cap: per_choice}
    )
    return Payload(capped, cap, plain)


async def _off_loop_if_big(size: int, fn: Callable[..., R], *args: Any) -> R:
    """``fn(*args)`` here, or in a thread for a body of over _ON_LOOP_BYTES.

    The json module holds the GIL for a whole call, so the thread shortens the event
    loop's stall rather than removing it (measured on 11.6 MB: 206 ms on the loop, 100 in
    a thread). Large answers avoid the parse altogether (answer_tail)."""
    if size <= _ON_LOOP_BYTES:
        return fn(*args)
    return await asyncio.to_thread(fn, *args)


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def _json_bytes(data: Any) -> bytes:
    return json.dumps(data).encode()


def _money_headers(call: PaidCall, cost: Cost) -> dict[str, str]:
    headers = {"X-Routstr-Cost-Msats": str(cost.total_msat)}
    if call.change_token:
        headers["X-Cashu"] = call.change_token
    return headers


def _json_answer(body: bytes, status: int, headers: dict[str, str]) -> web.Response:
    return web.Response(
        body=body, status=status, headers=headers, content_type="application/json", charset="utf-8"
    )


async def _forward(call: PaidCall, upstream: Upstream, payload: Payload) -> web.Response:
    started = time.perf_counter()
    try:
        async with await upstream.post(call.path, payload, stream=False) as resp:
            raw = await resp.read()
            status = resp.status
            content_type = resp.content_type
            retry_after = resp.headers.get("Retry-After")
    except TimeoutError:
        upstream.answered(None)
        raise upstream_timeout(upstream) from None
    except aiohttp.ClientError as exc:
        upstream.answered(None)
        raise upstream_failed(upstream, f"{type(exc).__name__}") from None
    finally:
        call.node.metrics.upstream_latency[upstream.name].observe(time.perf_counter() - started)
    upstream.answered(status)
    if status >= 400:
        raise upstream_status_error(upstream, status, raw, retry_after)
    tail = usage_at_the_end(raw) if len(raw) > _ON_LOOP_BYTES else None
    tail_counts = reported_usage(tail.usage) if tail is not None else None
    if tail is not None and tail_counts is not None:  # large: only its usage is rewritten
        cost = await call.settle(TokenUsage(tail_counts[0], tail_counts[1], True))
        body = tail.with_usage(raw, {**tail.usage, "cost": cost_json(cost)})
        return _json_answer(body, status, _money_headers(call, cost))
    data = await _off_loop_if_big(len(raw), _json_or_none, raw)
    counts = reported_usage(data.get("usage")) if isinstance(data, dict) else None
    usage = (
        TokenUsage(counts[0], counts[1], True)
        if counts
        else call.own_count(
            response_text(data) if data is not None else raw.decode("utf-8", "replace")
        )
    )
    cost = await call.settle(usage)
    headers = _money_headers(call, cost)
    if isinstance(data, dict):
        found = data.get("usage")
        usage_obj: dict[str, Any] = found if isinstance(found, dict) else {}
        if not counts:
            usage_obj = {**usage_fields(call.path, usage), **usage_obj}
        data["usage"] = {**usage_obj, "cost": cost_json(cost)}
        return _json_answer(await _off_loop_if_big(len(raw), _json_bytes, data), status, headers)
    return web.Response(body=raw, status=status, content_type=content_type, headers=headers)
