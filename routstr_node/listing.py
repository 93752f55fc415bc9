"""What the node lists: its models with their providers and prices, and each provider.

Display only: prices are shown as numbers people read (see pricing_fields); the
money itself is computed exactly elsewhere.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from routstr_node.config import ModelConfig, ProviderConfig, Settings
from routstr_node.pricing import (
    ModelPrice,
    max_listed_cost_msat,
    media_pricing_fields,
    pricing_fields,
)
from routstr_node.routing import ProviderBoard, ProviderStatus


def served_models(settings: Settings) -> list[ModelConfig]:
    """The models the node's routes serve: every model, on its category's routes."""
    return list(settings.models)


def _media_fields(model: ModelConfig, price: ModelPrice) -> dict[str, Any]:
    """A media model's `media_pricing` (section 10's prices in sat); none for the rest."""
    if model.category.priced_by_tokens:
        return {}
    return {"media_pricing": media_pricing_fields(price.media)}


def default_order(model: ModelConfig, board: ProviderBoard) -> list[ProviderConfig]:
    """The model's providers as a request without preferences meets them: node.toml's
    order, down providers last."""
    return sorted(model.offers, key=lambda o: board.status(o.upstream) is ProviderStatus.DOWN)


def models_listing(
    settings: Settings, btc_usd: Decimal | None, created: int, board: ProviderBoard | None = None
) -> list[dict[str, Any]]:
    """The `data` list of GET /v1/models.

    A model's own `pricing` is its first provider's in the default order; its
    `max_cost` the largest over its providers. Without a BTC/USD rate, USD-priced models
    are left out: they cannot be paid for until a rate is known, and a listing must not
    show a wrong price.
    """
    board = board if board is not None else ProviderBoard()
    entries = []
    for model in served_models(settings):
        if btc_usd is None and model.uses_usd:
            continue
        offers = default_order(model, board)
        prices = [ModelPrice.from_config(model, settings.pricing, btc_usd, o) for o in offers]
        most = max(max_listed_cost_msat(p) for p in prices)
        entries.append(
            {
                "id": model.id,
                "object": "model",
                "created": created,
                "owned_by": offers[0].upstream,
                "display_name": model.listed_name,
                "category": str(model.category),
                "capabilities": list(model.capabilities),
                "context_length": model.context_length,
                **pricing_fields(prices[0], most_msat=most),
                **_media_fields(model, prices[0]),
                "providers": [
                    {
                        "name": offer.upstream,
                        "status": str(board.status(offer.upstream)),
                        "data_collection": str(offer.data_collection),
                        "zdr": offer.zdr,
                        **pricing_fields(price),
                        **_media_fields(model, price),
                    }
                    for offer, price in zip(offers, prices, strict=True)
                ],
            }
        )
    return entries


def provider_models(settings: Settings, btc_usd: Decimal | None, name: str) -> list[dict[str, Any]]:
    """The `models` of GET /v1/providers/{name}: each at that provider's price (None
    while a USD price has no rate)."""
    listed = []
    for model in served_models(settings):
        offer = model.offer(name)
        if offer is None:
            continue
        priced = btc_usd is not None or not offer.uses_usd
        price = ModelPrice.from_config(model, settings.pricing, btc_usd, offer) if priced else None
        listed.append(
            {
                "id": model.id,
                "name": model.listed_name,
                "context_window": model.context_length,
                "pricing": pricing_fields(price)["pricing"] if price is not None else None,
            }
        )
    return listed
