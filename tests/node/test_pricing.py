"""Exact pricing (hand-computed and property-based) and the live BTC/USD rate."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import given
from hypothesis import strategies as st

from routstr_node.config import (
    KNOWN_PRICE_SOURCES,
    MintsSection,
    ModelConfig,
    PricingSection,
    Settings,
    UpstreamConfig,
)
from routstr_node.listing import models_listing
from routstr_node.pricing import (
    SOURCE_PARSERS,
    SOURCE_URLS,
    BtcUsdRate,
    Cost,
    ModelPrice,
    PriceUnavailable,
    cost_msat,
    max_cost_msat,
    pricing_fields,
)

BTC_USD = Decimal(100000)
FIXED = PricingSection(btc_usd=BTC_USD)


def model(**prices: Any) -> ModelConfig:
    fields: dict[str, Any] = {"context_length": 128000, "max_output_tokens": 16384}
    fields.update(prices)
    return ModelConfig(id=fields.pop("id", "m"), upstream="up", **fields)


GPT_4O_MINI = model(
    id="gpt-4o-mini", input_usd_per_1m=Decimal("0.15"), output_usd_per_1m=Decimal("0.60")
)


def price_of(config: ModelConfig, pricing: PricingSection = FIXED) -> ModelPrice:
    return ModelPrice.from_config(config, pricing, pricing.btc_usd)


# --- hand-computed examples ---------------------------------------------------------------


def test_gpt_4o_mini_example() -> None:
    price = price_of(GPT_4O_MINI)
    assert price.input_msat_per_token == Fraction(15, 100)  # $0.15/1M at $100k = 0.15 msat
    assert price.output_msat_per_token == Fraction(60, 100)
    assert isinstance(price.input_msat_per_token, Fraction)
    cost = cost_msat(price, 1000, 1000)
    assert cost == Cost(input_msat=150, output_msat=600, request_msat=0)
    assert cost.total_msat == 750
    assert all(type(v) is int for v in (cost.input_msat, cost.output_msat, cost.total_msat))


def test_rounding_up_happens_once() -> None:
    price = price_of(GPT_4O_MINI)
    assert cost_msat(price, 1, 0).total_msat == 1  # ceil(0.15)
    one_each = cost_msat(price, 1, 1)  # ceil(0.15 + 0.6) = 1, not ceil(0.15) + ceil(0.6) = 2
    assert one_each == Cost(input_msat=1, output_msat=0, request_msat=0)
    assert cost_msat(price, 3, 3).total_msat == 3  # ceil(0.45 + 1.8 = 2.25)
    assert cost_msat(price, 0, 0).total_msat == 0


def test_sat_prices() -> None:
    price = price_of(model(input_sat_per_1m=100, output_sat_per_1m=Decimal("400.5"), request_sat=2))
    assert price.input_msat_per_token == Fraction(1, 10)
    assert price.output_msat_per_token == Fraction(4005, 10000)
    assert price.request_msat == 2000
    cost = cost_msat(price, 10, 10)  # ceil(1 + 4.005) + 2000
    assert (cost.input_msat, cost.output_msat, cost.request_msat) == (1, 5, 2000)
    assert cost.total_msat == 2006


def test_sat_prices_need_no_rate() -> None:
    config = model(input_sat_per_1m=100)
    assert not config.uses_usd
    assert ModelPrice.from_config(config, PricingSection(), None).input_msat_per_token == Fraction(
        1, 10
    )


def test_usd_prices_need_a_rate() -> None:
    assert GPT_4O_MINI.uses_usd
    with pytest.raises(PriceUnavailable):
        ModelPrice.from_config(GPT_4O_MINI, PricingSection(), None)


def test_unpriced_direction_is_free() -> None:
    price = price_of(model(input_sat_per_1m=1000))
    assert price.output_msat_per_token == 0
    assert cost_msat(price, 0, 10**6) == Cost(0, 0, 0)


def test_a_model_without_any_price_is_told_apart() -> None:
    assert model().offers[0].is_unpriced
    for priced in (
        model(input_sat_per_1m=0),  # free on purpose: said so
        model(output_usd_per_1m=1),
        model(request_sat=1),
    ):
        assert not priced.offers[0].is_unpriced


def test_odd_exchange_rate_is_exact() -> None:
    rate = Decimal("97123.45")
    price = ModelPrice.from_config(GPT_4O_MINI, FIXED, rate)
    expected_in = Fraction(15, 100) * 10**11 / Fraction(9712345, 100) / 10**6
    assert price.input_msat_per_token == expected_in
    exact = 1234 * expected_in + 567 * price.output_msat_per_token
    assert cost_msat(price, 1234, 567).total_msat == math.ceil(exact)


def test_markup_applies_to_tokens_and_request_fee() -> None:
    pricing = PricingSection(btc_usd=BTC_USD, markup_percent=Decimal(10))
    config = model(input_usd_per_1m=Decimal("0.15"), output_sat_per_1m=1000, request_sat=1)
    price = price_of(config, pricing)
    assert price.input_msat_per_token == Fraction(165, 1000)
    assert price.output_msat_per_token == Fraction(11, 10)
    assert price.request_msat == 1100
    odd = price_of(config, PricingSection(btc_usd=BTC_USD, markup_percent=Decimal("0.33")))
    assert odd.request_msat == 1004  # 1003.3 rounded up


def test_min_request_msat_is_a_floor_on_the_total() -> None:
    pricing = PricingSection(btc_usd=BTC_USD, min_request_msat=10)
    price = price_of(model(input_sat_per_1m=1000, request_sat=0), pricing)
    assert cost_msat(price, 5, 0) == Cost(input_msat=5, output_msat=0, request_msat=5)
    assert cost_msat(price, 50, 0) == Cost(input_msat=50, output_msat=0, request_msat=0)
    with_fee = price_of(model(input_sat_per_1m=1000, request_sat=1), pricing)
    assert cost_msat(with_fee, 5, 0).total_msat == 1005


def test_negative_tokens_are_refused() -> None:
    with pytest.raises(ValueError):
        cost_msat(price_of(GPT_4O_MINI), -1, 0)


def test_max_cost_is_the_reservation() -> None:
    price = price_of(GPT_4O_MINI)
    assert max_cost_msat(price, 1000) == math.ceil(150 + Fraction(6, 10) * 16384)
    assert max_cost_msat(price, 1000, 1000) == 750
    assert max_cost_msat(price, 1000, 100_000) == 60150  # not capped: the client asked for it


def test_models_listing_display_numbers() -> None:
    settings = Settings(
        mints=MintsSection(trusted=["http://mint"]),
        pricing=FIXED,
        upstreams=[UpstreamConfig(name="up", base_url="http://up")],
        models=[GPT_4O_MINI, model(id="sat", input_sat_per_1m=100, request_sat=3)],
    )
    listing = models_listing(settings, BTC_USD, created=1700000000)
    assert [m["id"] for m in listing] == ["gpt-4o-mini", "sat"]
    first = listing[0]
    assert first["object"] == "model" and first["created"] == 1700000000
    assert first["owned_by"] == "up" and first["context_length"] == 128000
    assert first["pricing"] == {
        "prompt": 0.15,
        "completion": 0.6,
        "request": 0,
        "unit": "1k tokens",
        "currency": "sat",
    }
    # 128000 × 0.15 + 16384 × 0.6 = 29030.4 msat -> 30 sat
    assert first["sats_pricing"] == {
        "prompt": 0.00015,
        "completion": 0.0006,
        "request": 0,
        "max_cost": 30,
    }
    assert listing[1]["sats_pricing"]["request"] == 3
    assert listing[1]["pricing"]["prompt"] == 0.1
    json.dumps(listing)  # plain JSON, no Decimal or Fraction left
    # without a rate only what can be priced is listed
    assert [m["id"] for m in models_listing(settings, None, created=0)] == ["sat"]


def test_display_numbers_are_rounded_to_nine_decimals() -> None:
    price = ModelPrice(Fraction(1, 3), Fraction(0), 1500, 10, 100)
    fields = pricing_fields(price)
    assert fields["sats_pricing"]["prompt"] == 0.000333333
    assert fields["pricing"]["prompt"] == 0.333333333
    assert fields["pricing"]["request"] == 2  # 1.5 sat: sat fields are whole, rounded up
    assert fields["sats_pricing"]["request"] == 2
    assert fields["sats_pricing"]["max_cost"] == 2  # ceil((ceil(100/3) + 1500) / 1000)


# --- properties ------------------------------------------------------------------------

prices = st.decimals(min_value=0, max_value=100_000, places=6)
tokens = st.integers(min_value=0, max_value=10**7)


@st.composite
def model_prices(draw: st.DrawFn) -> ModelPrice:
    pricing = PricingSection(
        btc_usd=draw(st.decimals(min_value=1, max_value=10**7, places=2)),
        markup_percent=draw(st.decimals(min_value=0, max_value=200, places=3)),
    )
    in_unit, out_unit = draw(st.sampled_from(["usd", "sat"])), draw(st.sampled_from(["usd", "sat"]))
    config = model(
        **{
            f"input_{in_unit}_per_1m": draw(prices),
            f"output_{out_unit}_per_1m": draw(prices),
            "request_sat": draw(st.integers(min_value=0, max_value=1000)),
        }
    )
    return price_of(config, pricing)


@given(model_prices(), tokens, tokens)
def test_cost_is_the_exact_value_rounded_up_once(price: ModelPrice, i: int, o: int) -> None:
    cost = cost_msat(price, i, o)
    exact = i * price.input_msat_per_token + o * price.output_msat_per_token
    assert all(type(v) is int for v in (cost.input_msat, cost.output_msat, cost.request_msat))
    assert type(cost.total_msat) is int
    assert cost.total_msat == cost.input_msat + cost.output_msat + cost.request_msat
    assert cost.request_msat == price.request_msat
    assert exact + price.request_msat <= cost.total_msat < exact + price.request_msat + 1
    assert cost.input_msat >= i * price.input_msat_per_token
    assert cost.output_msat >= 0


@given(model_prices(), tokens, tokens, st.integers(0, 1000), st.integers(0, 1000))
def test_cost_is_monotone_in_tokens(price: ModelPrice, i: int, o: int, di: int, do: int) -> None:
    base = cost_msat(price, i, o)
    assert cost_msat(price, i + di, o).total_msat >= base.total_msat
    assert cost_msat(price, i, o + do).total_msat >= base.total_msat
    assert cost_msat(price, i + di, o).input_msat >= base.input_msat
    assert max_cost_msat(price, i + di, o + do) >= base.total_msat


@given(model_prices(), tokens, tokens, st.integers(0, 10**6))
def test_min_request_floor(price: ModelPrice, i: int, o: int, floor: int) -> None:
    floored = ModelPrice(
        price.input_msat_per_token,
        price.output_msat_per_token,
        price.request_msat,
        price.max_output_tokens,
        price.context_length,
        min_request_msat=floor,
    )
    plain, cost = cost_msat(price, i, o), cost_msat(floored, i, o)
    assert cost.total_msat == max(plain.total_msat, floor)
    assert cost.total_msat == cost.input_msat + cost.output_msat + cost.request_msat
    assert (cost.input_msat, cost.output_msat) == (plain.input_msat, plain.output_msat)


# --- live BTC/USD rate -------------------------------------------------------------------


def test_every_configurable_source_has_a_parser_and_url() -> None:
    assert set(SOURCE_PARSERS) == set(SOURCE_URLS) == set(KNOWN_PRICE_SOURCES)


@dataclass
class PriceServer:
    """A local stand-in for the price APIs; `answers` says what each one replies."""

    urls: dict[str, str]
    answers: dict[str, tuple[int, str]] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=lambda: {"kraken": 0, "coinbase": 0})

    def set(self, kraken: str | None, coinbase: str | None) -> None:
        def ok(body: str | None) -> tuple[int, str]:
            return (200, body) if body is not None else (500, "down")

        self.answers = {"kraken": ok(kraken), "coinbase": ok(coinbase)}


def kraken_body(price: str) -> str:
    ticker = {"a": ["1", "1", "1.0"], "c": [price, "0.01"]}
    return json.dumps({"error": [], "result": {"XXBTZUSD": ticker}})


def coinbase_body(price: str) -> str:
    return json.dumps({"data": {"amount": price, "base": "BTC", "currency": "USD"}})


@pytest.fixture
async def server() -> AsyncIterator[PriceServer]:
    app = web.Application()
    state = PriceServer(urls={})

    async def answer(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        state.hits[name] += 1
        status, body = state.answers[name]
        return web.Response(status=status, text=body, content_type="application/json")

    app.router.add_get("/{name}", answer)
    test_server = TestServer(app)
    await test_server.start_server()
    state.urls = {name: str(test_server.make_url(f"/{name}")) for name in KNOWN_PRICE_SOURCES}
    try:
        yield state
    finally:
        await test_server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def live_rate(
    server: PriceServer, session: aiohttp.ClientSession, clock: Clock, **kw: Any
) -> BtcUsdRate:
    return BtcUsdRate(PricingSection(**kw), session, urls=server.urls, clock=clock)


async def test_fixed_rate_needs_no_source() -> None:
    rate = BtcUsdRate(PricingSection(btc_usd=Decimal("95000.5")))
    assert await rate.get() == Decimal("95000.5")


def test_live_rate_needs_a_session() -> None:
    with pytest.raises(ValueError):
        BtcUsdRate(PricingSection())


async def test_median_of_sources_and_caching(
    server: PriceServer, session: aiohttp.ClientSession
) -> None:
    clock = Clock()
    server.set(kraken_body("100000.1"), coinbase_body("100002.3"))
    rate = live_rate(server, session, clock)
    value = await rate.get()
    assert value == Decimal("100001.2") and isinstance(value, Decimal)
    clock.now += 59
    server.set(kraken_body("1"), coinbase_body("1"))
    assert await rate.get() == Decimal("100001.2")  # cached
    assert server.hits == {"kraken": 1, "coinbase": 1}
    clock.now += 2
    assert await rate.get() == Decimal(1)  # refreshed after 60 s
    assert server.hits == {"kraken": 2, "coinbase": 2}


async def test_concurrent_requests_fetch_once(
    server: PriceServer, session: aiohttp.ClientSession
) -> None:
    server.set(kraken_body("90000"), coinbase_body("90000"))
    rate = live_rate(server, session, Clock())
    assert set(await asyncio.gather(*(rate.get() for _ in range(20)))) == {Decimal(90000)}
    assert server.hits == {"kraken": 1, "coinbase": 1}


async def test_only_configured_sources_are_asked(
    server: PriceServer, session: aiohttp.ClientSession
) -> None:
    server.set(kraken_body("1"), coinbase_body("97123.45"))
    rate = live_rate(server, session, Clock(), price_sources=["coinbase"])
    assert await rate.get() == Decimal("97123.45")
    assert server.hits["kraken"] == 0


@pytest.mark.parametrize(
    "bad_kraken",
    [
        None,
        "not json",
        json.dumps({"error": ["EQuery:Unknown asset pair"], "result": {}}),
        kraken_body("abc"),
        kraken_body("-5"),
        kraken_body("NaN"),
        json.dumps({"error": [], "result": {"XXBTZUSD": {"c": [True, "1"]}}}),
    ],
)
async def test_a_failing_source_is_left_out(
    server: PriceServer, session: aiohttp.ClientSession, bad_kraken: str | None
) -> None:
    server.set(bad_kraken, coinbase_body("95000"))
    assert await live_rate(server, session, Clock()).get() == Decimal(95000)


async def test_no_source_and_no_cache_is_unavailable(
    server: PriceServer, session: aiohttp.ClientSession
) -> None:
    server.set(None, None)
    with pytest.raises(PriceUnavailable, match="kraken, coinbase"):
        await live_rate(server, session, Clock()).get()


async def test_stale_rate_is_used_while_sources_are_down(
    server: PriceServer, session: aiohttp.ClientSession
) -> None:
    clock = Clock()
    server.set(kraken_body("80000"), coinbase_body("80000"))
    rate = live_rate(server, session, clock)
    assert await rate.get() == Decimal(80000)
    server.set(None, None)
    clock.now += 120
    assert await rate.get() == Decimal(80000)  # stale but under an hour old
    assert server.hits == {"kraken": 2, "coinbase": 2}
    clock.now += 5
    assert await rate.get() == Decimal(80000)  # retried only after retry_s
    assert server.hits == {"kraken": 2, "coinbase": 2}
    clock.now += 3600
    with pytest.raises(PriceUnavailable):
        await rate.get()
    server.set(kraken_body("81000"), None)
    clock.now += 10
    assert await rate.get() == Decimal(81000)  # back as soon as a source answers


async def test_live_rate_prices_models(server: PriceServer, session: aiohttp.ClientSession) -> None:
    server.set(kraken_body("100000"), coinbase_body("100000"))
    rate = await live_rate(server, session, Clock()).get()
    price = ModelPrice.from_config(GPT_4O_MINI, PricingSection(), rate)
    assert cost_msat(price, 1000, 1000).total_msat == 750
