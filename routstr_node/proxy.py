"""Paid, OpenAI-compatible token routes: check, choose providers, reserve, forward, settle.

A request is checked whole (its model, suffix and `provider` object too) before any
money moves; the most it can cost at any provider it may go to is reserved; the
providers are tried in the route's order until one answers (failover before the first
byte); the answer (or its stream) is relayed and charged at the answering provider's
price. The money, from reservation to change, is the PaidCall's.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from routstr_node.errors import ApiError, invalid_request, upstream_failed
from routstr_node.failover import UpstreamFailure, first_answer
from routstr_node.forward import forward, off_loop_if_big
from routstr_node.paid_call import PaidCall
from routstr_node.pricing import ModelPrice, PriceUnavailable, max_cost_msat
from routstr_node.relay import relay_stream
from routstr_node.request_body import parse_json_object, read_body, upstream_body
from routstr_node.routing import Candidate, Variant, choose, routing_of
from routstr_node.sessions import SESSIONS, open_turn
from routstr_node.state import NODE
from routstr_node.token_answer import TokenRequest
from routstr_node.upstream import Payload
from routstr_node.usage import (
    MAX_CHOICES,
    OUTPUT_CAP_KEYS,
    input_sequences,
    reads_beyond_body,
    requested_choices,
    requested_max_output,
)

log = logging.getLogger(__name__)

PROXIED_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses")
STREAMING_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/responses")
_MAX_OUTPUT_TOKENS = 100_000_000  # no model writes more; bounds the reservation
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
    body = await off_loop_if_big(len(raw), parse_json_object, raw)
    requested = body.get("model")
    if not isinstance(requested, str) or not requested:
        raise invalid_request("model_required", "the request must name a model", param="model")
    field_name, code = _REQUIRED_INPUT[path]
    given = body.get(field_name)
    # OpenAI's shapes: chat takes a list of messages; an empty completions prompt is fine
    empty = given is None or given == [] or (given == "" and path != "/v1/completions")
    if empty or (path == "/v1/chat/completions" and not isinstance(given, list)):
        raise invalid_request(
            code, f"the request must carry '{field_name}' (see the API reference)", param=field_name
        )
    session, raw, body = await open_turn(request, node, request.app.get(SESSIONS), raw, body)
    settings = node.settings
    model, variant, preferences = routing_of(
        settings, requested, body, path, lambda category: category.priced_by_tokens
    )
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
    try:
        prices = await node.prices(model)
    except PriceUnavailable as exc:
        raise ApiError(503, "api_error", "price_unavailable", str(exc)) from None
    # each input the upstream bills apart may fill the context; what it bills beyond the
    # request's bytes (media, stored state) is bounded by that alone
    assert model.context_length is not None and model.max_output_tokens is not None
    context = model.context_length * input_sequences(path, body)
    prompt_bound = context if reads_beyond_body(path, raw, body) else min(len(raw), context)
    per_choice = model.max_output_tokens if max_output is None else max_output
    output_bound = 0 if path == "/v1/embeddings" else per_choice * choices

    def most_msat(price: ModelPrice) -> int:
        return max_cost_msat(price, prompt_bound, output_bound)

    route = choose(
        model,
        prices,
        most_msat,
        node.board,
        variant=variant,
        preferences=preferences,
        body=body,
        running=node.upstreams,
    )
    token_request = TokenRequest(path, body, model.id, session)
    first = route.candidates[0]
    # built before any money moves: between the reservation and the block that settles
    # it, nothing may wait (a failover builds its provider's body inside it)
    first_payload = await off_loop_if_big(
        len(raw), _payload, raw, body, first, path, stream, max_output, per_choice, variant
    )

    async def attempt(candidate: Candidate) -> web.StreamResponse:
        upstream = node.upstreams.get(candidate.name)
        if upstream is None:  # removed by a settings change since the route was chosen
            raise UpstreamFailure(upstream_failed(candidate.name, "no longer configured"))
        payload = (
            first_payload
            if candidate is first
            else await off_loop_if_big(
                len(raw),
                _payload,
                raw,
                body,
                candidate,
                path,
                stream,
                max_output,
                per_choice,
                variant,
            )
        )
        with upstream.in_use():  # a settings change closes its session only after this
            if stream:
                return await relay_stream(
                    request, call, token_request, candidate, upstream, payload
                )
            return await forward(call, token_request, candidate, upstream, payload)

    async with PaidCall(request, node, route.reserve_msat, model.id) as call:
        return await first_answer(node, call, route, attempt)


def _payload(
    raw: bytes,
    body: dict[str, Any],
    candidate: Candidate,
    path: str,
    stream: bool,
    max_output: int | None,
    per_choice: int,
    variant: Variant | None,
) -> Payload:
    """The upstream's body: its name for the model, the `provider` object removed, for
    :thinking the provider's thinking_params (the client's own values win). What was
    reserved for is what the upstream may write: a request without a cap gets the
    model's, under its endpoint's name (and goes without it if the upstream does not
    know that name)."""
    offer = candidate.offer
    asks_usage = stream and path != "/v1/responses"
    thinking = (
        {k: v for k, v in offer.thinking_params.items() if k not in body}
        if variant is Variant.THINKING
        else {}
    )
    plain = upstream_body(
        raw, body, offer.upstream_model, asks_usage=asks_usage, added=thinking, removed=_NOT_SENT
    )
    if max_output is not None or path not in OUTPUT_CAP_KEYS:
        return Payload(plain)
    cap = OUTPUT_CAP_KEYS[path][0]
    capped = upstream_body(
        raw,
        body,
        offer.upstream_model,
        asks_usage=asks_usage,
        added={cap: per_choice, **thinking},
        removed=_NOT_SENT,
    )
    return Payload(capped, cap, plain)


# the node's own request fields: never forwarded (session_id also with sessions off)
_NOT_SENT = ("provider", "session_id")
