"""The node's aiohttp application: factory, shared state, middlewares, routes."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp import web

from mints.directory import MintDirectory
from routstr_node import admin, discovery, sessions, wallet_api
from routstr_node.background import every
from routstr_node.config import Settings
from routstr_node.errors import ApiError, from_domain
from routstr_node.identity import key_to_share, load_secret, npub
from routstr_node.media import routes as media_routes
from routstr_node.memory import TRIM_EVERY_S, HeapTrimmer
from routstr_node.metrics import Metrics
from routstr_node.nostr.service import nostr_context
from routstr_node.payment import presented_credential
from routstr_node.payout_job import payout_context
from routstr_node.pricing import BtcUsdRate
from routstr_node.proxy import PROXIED_PATHS, handle_proxy
from routstr_node.ratelimit import RateLimiter
from routstr_node.records import routes as records_routes
from routstr_node.records.service import RECORDS, records_context
from routstr_node.state import COUNTED_STREAM, NODE, REQUEST_ID, RESPONSE_HEADERS, NodeState
from routstr_node.upstream import Upstreams
from wallet import WalletService, key_hash

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_UNCOUNTED = ("/health", "/metrics")
# the API is for any web page too (a browser wallet paying with ecash): it takes no
# cookies, so any origin may call it and read what it answers, money headers included
_API_PREFIX = "/v1/"
_CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "X-Cashu, X-Cashu-Change, X-Routstr-Cost-Msats,"
    " X-Request-Id, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, Retry-After,"
    " X-Should-Retry",
}
_PREFLIGHT_MAX_AGE_S = 600
_PAID_PATHS = frozenset((*PROXIED_PATHS, *media_routes.MEDIA_PATHS))
_TOKEN_BUCKET = "token:"
# a new token's request refused for what it sent, the token too small included (a made-up
# one with a real keyset id gets that far without a call to the mint)
_REFUSALS = frozenset({400, 401, 402, 403, 404, 405, 409, 413})
# a round is one indexed read when nothing is pending; an operation a request gave up
# waiting for is asked about again within this (then less and less often)
RESOLVE_PENDING_EVERY_S = 5.0
FORGET_COUNTS_EVERY_S = 300.0  # ended rate-limit windows leave a shared database
_REQUEST_ID_PREFIX = os.urandom(6).hex()
_request_numbers = itertools.count(1)


def _new_request_id() -> str:
    """Unique per process and across restarts; a counter, not a urandom call per request."""
    return f"{_REQUEST_ID_PREFIX}{next(_request_numbers):010x}"


_SECRET_PREFIXES = ("sk-", "radmin_", "cashu")


def _looks_secret(request_id: str) -> bool:
    """A client's request id that is a key or a token (pasted in the wrong header) is
    not taken: request ids go into usage records and the access log."""
    return request_id.strip().lower().startswith(_SECRET_PREFIXES)


# at a stop, how long the wallet stays open for settlements still under way
SETTLE_ON_STOP_S = 10.0

CONFIG_PATH: web.AppKey[Path | None] = web.AppKey("config_path")  # where settings came from


def create_app(settings: Settings, *, config_path: Path | None = None) -> web.Application:
    app = web.Application(
        client_max_size=settings.limits.max_body_bytes,
        middlewares=[_outer_middleware, _rate_limit_middleware, admin.admin_guard],
    )
    app[CONFIG_PATH] = config_path
    app.cleanup_ctx.append(_node_context(settings))
    app.cleanup_ctx.append(records_context)  # usage records, the access log
    # a payment the mint left pending, an answer lost while a mint was away: resolved
    # while the node runs, not only at its next start
    app.cleanup_ctx.append(every(RESOLVE_PENDING_EVERY_S, "pending-operations", _resolve_stale))
    app.cleanup_ctx.append(
        every(FORGET_COUNTS_EVERY_S, "rate-counts", lambda node: node.limiter.forget_old_windows())
    )
    trimmer = HeapTrimmer()
    app.cleanup_ctx.append(
        every(
            TRIM_EVERY_S,
            "heap-trim",
            lambda node: trimmer.trim_if_due(node.metrics.latency.n, node.metrics.open_streams),
        )
    )
    for path in PROXIED_PATHS:
        app.router.add_post(path, handle_proxy)
    media_routes.add_routes(app)
    discovery.add_routes(app)
    wallet_api.add_routes(app)
    records_routes.add_routes(app)
    sessions.routes.add_routes(app)
    admin.add_routes(app)  # applies the panel's changes at start: before Nostr announces
    app.cleanup_ctx.append(nostr_context)  # announcing this node, discovering others
    app.cleanup_ctx.append(payout_context)  # earnings to the operator's Lightning address
    return app


async def _resolve_stale(node: NodeState) -> None:
    report = await node.wallet.resolve_stale()
    await node.wallet.payouts.settle_open()  # payouts whose operations were just resolved
    if report.completed or report.failed:
        log.info(
            "pending operations resolved: %d completed, %d failed",
            len(report.completed),
            len(report.failed),
        )


def _node_context(settings: Settings) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        mints = MintDirectory(list(settings.mints.trusted), timeout_s=settings.mints.timeout_s)
        wallet = WalletService(settings.node.data_dir, mints, settings.database.url)
        upstreams = Upstreams()
        price_session = aiohttp.ClientSession()
        for model in settings.models:
            for offer in model.offers:
                if offer.is_unpriced:
                    log.warning(
                        "model '%s' has no price at all at '%s': it is served for free",
                        model.id,
                        offer.upstream,
                    )
        learning = asyncio.create_task(mints.learn_keysets(), name="mint-keysets")
        try:
            await wallet.open_for_serving()  # pending operations resolve beside serving
            await upstreams.configure(list(settings.upstreams))
            data_dir = settings.node.data_dir
            shared_key = (
                await wallet.store.nostr_key(key_to_share(data_dir))
                if wallet.store.shared
                else None
            )
            nostr_secret = load_secret(data_dir, settings.nostr.nsec, shared_key)
            limits = settings.limits
            app[NODE] = NodeState(
                settings=settings,
                mints=mints,
                wallet=wallet,
                upstreams=upstreams,
                rate=BtcUsdRate(settings.pricing, price_session),
                limiter=RateLimiter(
                    limits.requests_per_minute,
                    limits.requests_per_hour,
                    limits.requests_per_day,
                    shared=wallet.request_counts,
                ),
                metrics=Metrics(),
                npub=npub(nostr_secret),
                shared_nostr_key=shared_key,
            )
            yield
        finally:
            learning.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await learning
            await upstreams.close()  # a call still reading its upstream ends and settles
            await price_session.close()
            node = app.get(NODE)
            if node is not None and not await node.unsettled.drained(SETTLE_ON_STOP_S):
                log.warning("stopping with calls unsettled: the next start releases them")
            await wallet.close()
            await mints.close()

    return context


@web.middleware
async def _outer_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id on every answer, the contract's error envelope, metrics."""
    request_id = request.headers.get("X-Request-Id") or _new_request_id()
    if len(request_id) > 128 or not request_id.isprintable() or _looks_secret(request_id):
        request_id = _new_request_id()
    headers: dict[str, str] = {"X-Request-Id": request_id}
    if request.path.startswith(_API_PREFIX):
        headers.update(_CORS)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            return _preflight(request, headers)  # not a request of its own: not counted
    request[REQUEST_ID] = request_id
    request[RESPONSE_HEADERS] = headers
    created = int(time.time())
    started = time.perf_counter()
    status = 499  # cancelled: the client went away
    try:
        response = await _answer(request, handler)
        status = response.status
    finally:
        node = request.app.get(NODE)
        if node is not None and request.get(COUNTED_STREAM):
            node.metrics.open_streams -= 1
        records = request.app.get(RECORDS)
        if records is not None:
            records.request_done(request, status, created, started)
    if not response.prepared:
        for name, value in request[RESPONSE_HEADERS].items():
            response.headers.setdefault(name, value)
    node = request.app.get(NODE)
    if node is not None:
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "unmatched"
        node.metrics.request_done(name, response.status, time.perf_counter() - started)
    return response


def _preflight(request: web.Request, headers: dict[str, str]) -> web.Response:
    """A browser asking whether it may send this request (CORS): yes, with the headers it
    names (the SDKs add their own), for the methods the API has."""
    asked = request.headers.get("Access-Control-Request-Headers", "")
    allowed = {
        **headers,
        "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
        "Access-Control-Allow-Headers": asked or "Authorization, Content-Type, X-Cashu",
        "Access-Control-Max-Age": str(_PREFLIGHT_MAX_AGE_S),
    }
    return web.Response(status=204, headers=allowed)


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        response = exc.response()
        if exc.status == 408:  # the rest of that body may still come: not on this connection
            response.force_close()
        return response
    except web.HTTPRequestEntityTooLarge:
        return ApiError(
            413, "invalid_request_error", "body_too_large", "the request body is too large"
        ).response()
    except web.RequestPayloadError as exc:  # e.g. a Content-Encoding the body does not match
        unreadable = ApiError(
            400, "invalid_request_error", "invalid_body", f"the request body is unreadable: {exc}"
        ).response()
        # the rest of that body cannot be read past: the connection ends with this answer,
        # said in Connection: close, so the client opens a new one for its next request
        unreadable.force_close()
        return unreadable
    except web.HTTPException as exc:
        if exc.status == 404:
            return ApiError(
                404, "not_found_error", "not_found", f"no route {request.method} {request.path}"
            ).response()
        if exc.status == 405:
            return ApiError(
                405,
                "invalid_request_error",
                "method_not_allowed",
                f"{request.method} is not allowed on {request.path}",
                headers={"Allow": exc.headers.get("Allow", "")},
            ).response()
        return ApiError(exc.status, "invalid_request_error", "http_error", exc.reason).response()
    except ConnectionResetError:
        # the client went away before its request was read: nobody to answer, nothing wrong
        log.info("client gone before its request was read (request id %s)", request[REQUEST_ID])
        gone = ApiError(400, "invalid_request_error", "invalid_body", "the connection was lost")
        response = gone.response()
        response.force_close()
        return response
    except Exception as exc:
        mapped = from_domain(exc)
        if mapped is not None:
            return mapped.response()
        log.exception("internal error (request id %s)", request[REQUEST_ID])
        return ApiError(
            500,
            "api_error",
            "internal_error",
            f"internal error; request id {request[REQUEST_ID]}",
        ).response()


async def _payer_bucket(node: NodeState, request: web.Request) -> str:
    """A paid request's own bucket: its token's, or its account key's.

    A key that opens no account (made up) counts against the client's address: else a
    new made-up key on every request would be a fresh allowance. Finding out is the
    account lookup the payment uses next (kept with the request, and in memory for
    real keys). An account's keys (sk- and radmin_) share its bucket: one payer.
    """
    credential = await presented_credential(request, node)
    if credential.text is None:
        return ""
    if credential.is_token:
        return _TOKEN_BUCKET + key_hash(credential.text)
    return "" if credential.account_id is None else f"payer:{credential.account_id}"


@web.middleware
async def _rate_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Per payer on paid routes, per client address elsewhere; /health and /metrics free."""
    node = request.app.get(NODE)
    if node is None or request.path in _UNCOUNTED:
        return await handler(request)
    address = "ip:" + (request.remote or "unknown")
    key = await _payer_bucket(node, request) if request.path in _PAID_PATHS else ""
    # every token is a payer of its own, but an address whose new tokens keep being
    # refused (made up: each a fresh bucket) is held back for the new tokens it sends
    # next; a token already counted is a payer whose own mistakes cost only itself
    refused = "refused-" + address
    is_token = key.startswith(_TOKEN_BUCKET)
    new_token = is_token and not node.limiter.knows(key)
    verdict = (new_token and node.limiter.full(refused)) or await node.limiter.count(key or address)
    headers = {
        "X-RateLimit-Limit": str(verdict.limit),
        "X-RateLimit-Remaining": str(verdict.remaining),
        "X-RateLimit-Reset": str(verdict.reset_s),
    }
    request[RESPONSE_HEADERS].update(headers)
    if not verdict.allowed:
        raise ApiError(
            429,
            "rate_limit_error",
            "rate_limited",
            "too many requests; slow down",
            headers={**headers, "Retry-After": str(verdict.retry_after_s)},
        )
    try:
        return await handler(request)
    except Exception as exc:
        if new_token and _is_refusal(exc):
            node.limiter.hit(refused)
        raise


def _is_refusal(exc: Exception) -> bool:
    error = exc if isinstance(exc, ApiError) else from_domain(exc)
    return error is not None and error.status in _REFUSALS
