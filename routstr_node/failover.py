"""Trying a route's providers in order until one answers, on every paid route.

A failed attempt (no connection, a timeout before the answer starts, HTTP 5xx, 408 or
429) moves on to the next candidate as long as no byte of the answer has reached the
client: the attempt signals it by raising UpstreamFailure. It costs nothing and counts
toward its provider's `down` state. The client gets the first success, or the last
failure. A client error the upstream found (400, 404…) is the client's and ends the call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import aiohttp

from routstr_node.errors import ApiError, upstream_failed, upstream_status_error, upstream_timeout
from routstr_node.paid_call import PaidCall
from routstr_node.routing import Candidate, Route
from routstr_node.state import NodeState
from routstr_node.upstream import Payload, Upstream

log = logging.getLogger(__name__)

R = TypeVar("R")


class UpstreamFailure(Exception):
    """An attempt failed before any byte reached the client: the next candidate may go."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(error.message)
        self.error = error


def is_failover_status(status: int) -> bool:
    return status >= 500 or status in (408, 429)


async def first_answer(
    node: NodeState,
    call: PaidCall,
    route: Route,
    attempt: Callable[[Candidate], Awaitable[R]],
) -> R:
    """``attempt`` each candidate in turn; the first that does not fail is the answer."""
    last = len(route.candidates) - 1
    metrics = node.metrics
    for index, candidate in enumerate(route.candidates):
        name = candidate.name
        call.answered_by(candidate)
        metrics.provider_attempts[name] += 1
        try:
            return await attempt(candidate)
        except UpstreamFailure as failure:
            node.board.failed(name)
            metrics.provider_failures[name] += 1
            if index == last:
                raise failure.error from None
            metrics.provider_failovers[name] += 1
            log.debug(
                "provider '%s' failed for '%s' (%s): trying '%s'",
                name,
                route.model.id,
                failure.error.message,
                route.candidates[index + 1].name,
            )
    raise AssertionError("a route has at least one candidate")


@dataclass(frozen=True, slots=True)
class Opened:
    """An upstream's answer that did not fail: its status is below 500 (and not 408/429)."""

    response: aiohttp.ClientResponse
    started: float  # perf_counter() when the request went out
    answered: float  # perf_counter() when the answer's head arrived


async def open_answer(
    node: NodeState,
    model_id: str,
    upstream: Upstream,
    path: str,
    payload: Payload,
    *,
    stream: bool,
    accept: str | None = None,
) -> Opened:
    """Send ``payload``; raise UpstreamFailure when the provider fails, else its answer
    (a client error among them: the caller reads it). Measures the provider's latency."""

    def send() -> Awaitable[aiohttp.ClientResponse]:
        return upstream.post(path, payload, stream=stream, accept=accept)

    return await open_sent(node, model_id, upstream.name, send)


async def open_sent(
    node: NodeState,
    model_id: str,
    name: str,
    send: Callable[[], Awaitable[aiohttp.ClientResponse]],
) -> Opened:
    """``open_answer`` for a request of any kind: ``send()`` sends it to provider ``name``."""
    started = time.perf_counter()
    try:
        response = await send()
    except TimeoutError:
        raise UpstreamFailure(upstream_timeout(name)) from None
    except aiohttp.ClientError as exc:
        raise UpstreamFailure(upstream_failed(name, type(exc).__name__)) from None
    answered = time.perf_counter()
    node.metrics.upstream_latency[name].observe(answered - started)
    status = response.status
    if is_failover_status(status):
        try:
            raw = await response.read()
        except (aiohttp.ClientError, TimeoutError):
            raw = b""
        finally:
            response.release()
        raise UpstreamFailure(
            upstream_status_error(name, status, raw, response.headers.get("Retry-After"))
        )
    if status >= 400:
        node.board.up(name)
    else:
        node.board.answered(name, model_id, answered - started)
    return Opened(response, started, answered)


async def read_answer(opened: Opened, name: str) -> bytes:
    """The whole body of an answer; a provider that breaks off while sending it failed
    (nothing of it reached the client: the next candidate may go)."""
    try:
        async with opened.response as resp:
            return await resp.read()
    except TimeoutError:
        raise UpstreamFailure(upstream_timeout(name)) from None
    except aiohttp.ClientError as exc:
        raise UpstreamFailure(upstream_failed(name, type(exc).__name__)) from None
