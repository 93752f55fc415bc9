"""One paid media request, whatever the route: model, provider choice, payment, failover.

A route gives what it read of its request (a MediaRequest: what it can cost at a
price) and an ``attempt`` that sends it to one provider and reads the answer. The rest
is the token routes' own machinery: ``choose`` for the candidates and the reservation,
PaidCall for the money, ``first_answer`` for failover before the first byte.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

import aiohttp
from aiohttp import web

from routstr_node.config import ModelCategory, ModelConfig
from routstr_node.errors import ApiError, invalid_request, upstream_failed, upstream_status_error
from routstr_node.failover import UpstreamFailure, first_answer, open_answer, read_answer
from routstr_node.media.answers import ClientGone
from routstr_node.media.costs import UnsupportedSize
from routstr_node.paid_call import PaidCall
from routstr_node.pricing import ModelPrice, PriceUnavailable
from routstr_node.request_body import upstream_body
from routstr_node.routing import Candidate, choose, routing_of
from routstr_node.state import NODE
from routstr_node.upstream import Payload, Upstream


class MediaRequest(Protocol):
    def most_msat(self, price: ModelPrice) -> int: ...


R = TypeVar("R", bound=MediaRequest)
Attempt = Callable[[PaidCall, Candidate, Upstream], Awaitable[web.StreamResponse]]


async def serve_media(
    request: web.Request,
    body: Mapping[str, Any],
    category: ModelCategory,
    read: Callable[[ModelConfig], R],
    attempt: Callable[[R, ModelConfig], Attempt],
) -> web.StreamResponse:
    """Check the request whole, reserve the most it can cost at any candidate, then try
    the candidates in turn. ``read(model)`` reads the request for its model (its errors
    cost nothing); ``attempt(reading, model)`` is what one try does."""
    node = request.app[NODE]
    settings = node.settings
    requested = body.get("model")
    if not isinstance(requested, str) or not requested:
        raise invalid_request("model_required", "the request must name a model", param="model")
    model, variant, preferences = routing_of(
        settings, requested, body, request.path, lambda served: served is category
    )
    reading = read(model)
    try:
        prices = await node.prices(model)
    except PriceUnavailable as exc:
        raise ApiError(503, "api_error", "price_unavailable", str(exc)) from None
    unsuited: dict[str, str] = {}
    refusal: UnsupportedSize | None = None
    for offer, price in zip(model.offers, prices, strict=True):
        try:
            reading.most_msat(price)
        except UnsupportedSize as exc:
            unsuited[offer.upstream] = "size"
            refusal = refusal or exc
    if refusal is not None and len(unsuited) == len(model.offers):
        raise refusal
    route = choose(
        model,
        prices,
        reading.most_msat,
        node.board,
        variant=variant,
        preferences=preferences,
        body=body,
        running=node.upstreams,
        unsuited=unsuited,
    )
    one_try = attempt(reading, model)
    try:
        async with PaidCall(request, node, route.reserve_msat, model.id) as call:

            async def on(candidate: Candidate) -> web.StreamResponse:
                upstream = node.upstreams.get(candidate.name)
                if upstream is None:  # removed by a settings change since the route was chosen
                    raise UpstreamFailure(upstream_failed(candidate.name, "no longer configured"))
                with upstream.in_use():
                    return await one_try(call, candidate, upstream)

            return await first_answer(node, call, route, on)
    except ClientGone:
        # nothing reached the client: PaidCall charged nothing (an X-Cashu token's
        # change stays claimable at /v1/wallet/refund)
        return web.Response(status=499)


async def send_json(
    call: PaidCall,
    model_id: str,
    candidate: Candidate,
    upstream: Upstream,
    path: str,
    raw: bytes,
    body: dict[str, Any],
    *,
    added: dict[str, Any] | None = None,
    accept: str | None = None,
) -> tuple[bytes, aiohttp.ClientResponse]:
    """The client's JSON request sent to one provider (its name for the model, the
    ``provider`` object removed, ``added`` members put in): the answer read whole, with
    its head. A failure is UpstreamFailure; a client error the provider found, its error."""
    name = candidate.name
    forwarded = upstream_body(
        raw, body, candidate.offer.upstream_model, asks_usage=False, added=added, removed=NOT_SENT
    )
    opened = await open_answer(
        call.node, model_id, upstream, path, Payload(forwarded), stream=False, accept=accept
    )
    answer = await read_answer(opened, name)
    resp = opened.response
    if resp.status >= 400:
        raise upstream_status_error(name, resp.status, answer, resp.headers.get("Retry-After"))
    return answer, resp


NOT_SENT = ("provider",)  # the node's own request fields: never forwarded
