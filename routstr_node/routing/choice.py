"""Which providers a request may go to, and in which order they are tried.

Candidates are the model's providers narrowed by the suffix and the `provider` object;
the order is node.toml's, with down providers last, then the request's sort, then its
`order` names first. The reservation covers the most the request can cost at any
candidate that may be tried.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from routstr_node.config import DataCollection, ModelConfig, ProviderConfig
from routstr_node.pricing import ModelPrice
from routstr_node.routing.board import ProviderBoard
from routstr_node.routing.errors import InvalidProvider, ModelUnavailable, NoProviderAvailable
from routstr_node.routing.request import (
    NO_PREFERENCES,
    Preferences,
    Sort,
    Variant,
    request_parameters,
)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A provider a request may be sent to, priced for this request."""

    name: str  # the upstream's name: what the provider is called everywhere
    offer: ProviderConfig
    price: ModelPrice
    most_msat: int  # the most this request can cost through this provider


@dataclass(frozen=True, slots=True)
class Route:
    model: ModelConfig
    candidates: tuple[Candidate, ...]  # in the order they are tried; never empty
    # what is reserved (and asked for in a 402): the most at any candidate
    reserve_msat: int


def _route(model: ModelConfig, candidates: tuple[Candidate, ...]) -> Route:
    return Route(model, candidates, max(c.most_msat for c in candidates))


_SUFFIX_SORTS = {Variant.FLOOR: Sort.PRICE, Variant.NITRO: Sort.THROUGHPUT}


def choose(
    model: ModelConfig,
    prices: Sequence[ModelPrice],
    most_msat: Callable[[ModelPrice], int],
    board: ProviderBoard,
    *,
    variant: Variant | None = None,
    preferences: Preferences = NO_PREFERENCES,
    body: Mapping[str, Any] | None = None,
    running: Container[str] | None = None,
    unsuited: Mapping[str, str] | None = None,
) -> Route:
    """The request's route. ``prices`` are the model's offers' (same order);
    ``most_msat`` is what the request can cost at a price; ``body`` the request (its
    parameters are read only for `require_parameters`); ``running`` the upstreams the
    node has open (None: all); ``unsuited`` providers that cannot serve this request
    (a media size they do not sell), each with the request field that rules it out.

    Raises ModelUnavailable when no provider serves the suffix, NoProviderAvailable when
    the request's own filters leave none, InvalidProvider for a sort the suffix
    contradicts.
    """
    offers = model.offers
    unsuited = unsuited or {}
    if len(offers) == 1 and variant is None and preferences is NO_PREFERENCES and not unsuited:
        return _single(model, offers[0], prices[0], most_msat, running)
    sort = _sort(variant, preferences)
    kept: list[int] = []
    excluded: dict[str, str] = {}
    served = False
    asked = (
        request_parameters(body) if preferences.require_parameters and body is not None else None
    )
    for index, offer in enumerate(offers):
        if variant is Variant.ONLINE and not offer.online:
            continue
        if variant is Variant.THINKING and not offer.thinking:
            continue
        served = True
        reason = unsuited.get(offer.upstream) or _excluded_by(offer, preferences, asked, running)
        if reason is None:
            kept.append(index)
        else:
            excluded.setdefault(offer.upstream, reason)
    if not served:
        raise ModelUnavailable(f"no provider of '{model.id}' serves ':{variant}'")
    if not kept:
        raise NoProviderAvailable(model.id, excluded)
    candidates = [
        Candidate(offers[i].upstream, offers[i], prices[i], most_msat(prices[i])) for i in kept
    ]
    candidates.sort(key=_order_key(model.id, preferences, sort, board))
    if not preferences.allow_fallbacks:
        del candidates[1:]
    for candidate in candidates:  # a down provider in its normal place: its trial
        if not board.tried_last(candidate.name):
            board.trying(candidate.name)
    return _route(model, tuple(candidates))


def _single(
    model: ModelConfig,
    offer: ProviderConfig,
    price: ModelPrice,
    most_msat: Callable[[ModelPrice], int],
    running: Container[str] | None,
) -> Route:
    """The one-provider model asked for without preferences: nothing to choose."""
    if running is not None and offer.upstream not in running:
        raise NoProviderAvailable(model.id, {offer.upstream: "availability"})
    most = most_msat(price)
    return Route(model, (Candidate(offer.upstream, offer, price, most),), most)


def _sort(variant: Variant | None, preferences: Preferences) -> Sort | None:
    by_suffix = _SUFFIX_SORTS.get(variant) if variant is not None else None
    if by_suffix is not None and preferences.sort not in (None, by_suffix):
        raise InvalidProvider(
            "provider.sort", f"provider.sort '{preferences.sort}' contradicts ':{variant}'"
        )
    return by_suffix or preferences.sort


def _excluded_by(
    offer: ProviderConfig,
    preferences: Preferences,
    asked: frozenset[str] | None,
    running: Container[str] | None,
) -> str | None:
    """The first of the request's filters that leaves ``offer`` out (its name), or None."""
    name = offer.upstream
    if preferences.only is not None and name not in preferences.only:
        return "only"
    if name in preferences.ignore:
        return "ignore"
    if (
        preferences.data_collection is DataCollection.DENY
        and offer.data_collection is not DataCollection.DENY
    ):
        return "data_collection"
    if preferences.zdr and not offer.zdr:
        return "zdr"
    supported = offer.supported_parameters
    if asked is not None and supported is not None and not asked <= set(supported):
        return "require_parameters"
    if running is not None and name not in running:
        return "availability"  # named in node.toml, not open now (a settings change under way)
    return None


def _order_key(
    model_id: str, preferences: Preferences, sort: Sort | None, board: ProviderBoard
) -> Callable[[Candidate], tuple[int, bool, float]]:
    """Sort key: the client's `order` names first, then down providers after the rest,
    then the sort; ties keep node.toml's order (the sort is stable)."""
    order = preferences.order
    positions = {name: i for i, name in enumerate(order)}

    def measure(candidate: Candidate) -> float:
        match sort:
            case Sort.PRICE:
                return candidate.most_msat  # an int: compared exactly
            case Sort.THROUGHPUT:
                tps = board.throughput(candidate.name, model_id)
                return _UNMEASURED if tps is None else -tps
            case Sort.LATENCY:
                latency = board.latency_s(candidate.name, model_id)
                return _UNMEASURED if latency is None else latency
            case None:
                return 0

    def key(candidate: Candidate) -> tuple[int, bool, float]:
        position = positions.get(candidate.name, len(order))
        # a name the client put first is its call; among the rest, down providers go last
        demoted = position == len(order) and board.tried_last(candidate.name)
        return (position, demoted, measure(candidate))

    return key


_UNMEASURED = float("inf")  # after every measured provider
