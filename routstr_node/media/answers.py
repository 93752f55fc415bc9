"""What every media answer carries: the cost (header and body), the provider, the model.

JSON answers get top-level ``"cost"`` (sat, exact to the msat: 12.345), ``"usage"``
with ``"cost": {"total_msats", …}``, ``"provider"`` and the node's ``"model"``; binary
answers (speech audio) carry the same money in headers only: ``X-Routstr-Cost-Msats``
and, for X-Cashu, the change in ``X-Cashu``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from typing import Any, TypeVar

from aiohttp import web

from routstr_node.errors import upstream_failed
from routstr_node.failover import UpstreamFailure
from routstr_node.paid_call import PaidCall
from routstr_node.pricing import MSAT_PER_SAT, Cost
from routstr_node.token_answer import cost_json

T = TypeVar("T")
# how often a long wait (a video being made) looks whether its client is still there
CLIENT_CHECK_S = 0.5


def cost_sat(msat: int) -> int | float:
    """An amount in sat as a JSON number exact to the msat (12345 msat: 12.345).

    Display only: the float is made from the integer at the end, and any n/1000 below
    2**53 prints back as its three decimals."""
    whole, rest = divmod(msat, MSAT_PER_SAT)
    return whole if rest == 0 else msat / MSAT_PER_SAT


def json_object(raw: bytes, provider: str) -> dict[str, Any]:
    """A provider's JSON answer; one that is not a JSON object is a failed attempt."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict):
        raise UpstreamFailure(upstream_failed(provider, "the answer is not a JSON object"))
    return data


def json_answer(
    data: dict[str, Any], call: PaidCall, model_id: str, cost: Cost, **usage: Any
) -> web.Response:
    """``data`` with the node's model, the provider, the cost and ``usage`` (the
    upstream's own usage members kept, ``usage`` added)."""
    found = data.get("usage")
    data["usage"] = {
        **(found if isinstance(found, dict) else {}),
        **usage,
        "cost": cost_json(cost),
    }
    data["model"] = model_id
    data["provider"] = call.provider
    data["cost"] = cost_sat(cost.total_msat)
    return web.Response(
        body=json.dumps(data).encode(),
        headers=call.answer_headers(),
        content_type="application/json",
        charset="utf-8",
    )


def binary_answer(
    body: bytes, content_type: str, call: PaidCall, *, charset: str | None = None
) -> web.Response:
    """Audio bytes (or a transcript as text) as they came, the money in the headers."""
    return web.Response(
        body=body, headers=call.answer_headers(), content_type=content_type, charset=charset
    )


class ClientGone(Exception):
    """The client closed its connection before its answer: nothing was delivered."""


def client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def unless_client_leaves(request: web.Request, work: Awaitable[T]) -> T:
    """``work``'s result; cancelled with ClientGone if the client leaves first.

    aiohttp lets a handler run on when its client disconnects: a wait of minutes (a
    video being made) looks for itself, so that a client who gave up pays nothing."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=CLIENT_CHECK_S)
            if done:
                return task.result()
            if client_gone(request):
                raise ClientGone
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
