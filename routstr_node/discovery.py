"""What the node offers: health, metrics, models with prices, providers, node info."""

from __future__ import annotations

from aiohttp import web

import routstr_node
from routstr_node.config import ModelCategory
from routstr_node.errors import not_found
from routstr_node.listing import models_listing, provider_models, served_models
from routstr_node.media.routes import category_paths
from routstr_node.nostr.service import NOSTR
from routstr_node.proxy import PROXIED_PATHS, STREAMING_PATHS
from routstr_node.state import NODE, NodeState


def add_routes(app: web.Application) -> None:
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/v1/models/{model_id:.+}", model)  # ids may hold a "/"
    app.router.add_get("/v1/info", info)
    app.router.add_get("/v1/providers", providers)
    app.router.add_get("/v1/providers/{name}", provider)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


# Prometheus's text exposition format names its version in the content type
_PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


async def metrics(request: web.Request) -> web.Response:
    text = request.app[NODE].metrics.render()
    return web.Response(
        body=text.encode(),
        headers={"Content-Type": _PROMETHEUS_TEXT, "X-Content-Type-Options": "nosniff"},
    )


async def models(request: web.Request) -> web.Response:
    node = request.app[NODE]
    btc_usd = await node.btc_usd_or_none()
    data = models_listing(node.settings, btc_usd, int(node.started_at), node.board)
    return web.json_response({"object": "list", "data": data})


async def model(request: web.Request) -> web.Response:
    """One entry of the listing, as OpenAI's GET /v1/models/{model} (the SDK's retrieve)."""
    node = request.app[NODE]
    model_id = request.match_info["model_id"]
    btc_usd = await node.btc_usd_or_none()
    for entry in models_listing(node.settings, btc_usd, int(node.started_at), node.board):
        if entry["id"] == model_id:
            return web.json_response(entry)
    raise not_found("model_not_available", f"the model '{model_id}' is not available here")


async def info(request: web.Request) -> web.Response:
    node = request.app[NODE]
    settings = node.settings
    return web.json_response(
        {
            "name": settings.node.name,
            "description": settings.node.description,
            "version": routstr_node.__version__,
            "npub": node.npub,
            "mints": list(node.mints.urls),
            "http_url": settings.node.public_url or f"http://{request.host}",
            "models": [m.id for m in served_models(settings)],
        }
    )


def _provider_summary(node: NodeState, name: str) -> dict[str, object]:
    models = [m for m in served_models(node.settings) if m.offer(name) is not None]
    return {
        "name": name,
        "models": [m.id for m in models],
        "endpoints": _endpoints({m.category for m in models}),
        "status": str(node.board.status(name)),
    }


def _endpoints(categories: set[ModelCategory]) -> list[str]:
    """The paths a provider's models are served on (the token routes when it has none)."""
    tokens = not categories or any(c.priced_by_tokens for c in categories)
    paths = list(PROXIED_PATHS) if tokens else []
    for category in sorted(categories):
        paths += category_paths(category)
    return paths


async def providers(request: web.Request) -> web.Response:
    node = request.app[NODE]
    nostr = request.app.get(NOSTR)
    return web.json_response(
        {
            "providers": [_provider_summary(node, u.name) for u in node.settings.upstreams],
            # other nodes announced on the configured Nostr relays (NIP-91), newest first
            "nodes": nostr.nodes() if nostr is not None else [],
        }
    )


async def provider(request: web.Request) -> web.Response:
    """One provider, with its measured latency (median time to the first byte) and
    throughput (output tokens per second) over recent paid calls."""
    node = request.app[NODE]
    name = request.match_info["name"]
    if all(u.name != name for u in node.settings.upstreams):
        raise not_found("not_found", f"no provider named '{name}'")
    btc_usd = await node.btc_usd_or_none()
    latency = node.board.latency_s(name)
    throughput = node.board.throughput(name)
    return web.json_response(
        {
            **_provider_summary(node, name),
            "display_name": name,
            "description": f"{node.settings.node.name} via {name}",
            "models": provider_models(node.settings, btc_usd, name),
            "features": ["streaming"] if set(STREAMING_PATHS) else [],
            "latency_ms": None if latency is None else round(latency * 1000),
            "throughput_tps": None if throughput is None else round(throughput, 1),
        }
    )
