"""Exact pricing: model prices as Fractions of a msat per unit, costs as integer msat.

No float touches a price or an amount: config prices are Decimal, converted to
Fraction, and a cost is rounded up to the msat once. Floats appear only in the
display numbers of GET /v1/models. A unit is a token, or for media models (contract
section 10) an image, a character of speech input, a second of audio or of video.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

import aiohttp

from routstr_node.config import ModelConfig, PricingSection, ProviderConfig

log = logging.getLogger(__name__)

MSAT_PER_SAT = 1000
MSAT_PER_BTC = 100_000_000_000
TOKENS_PER_PRICE_UNIT = 1_000_000  # config prices are per 1M tokens (and per 1M characters)
SECONDS_PER_MINUTE = 60  # audio is priced per minute, billed per started second


class PriceUnavailable(Exception):
    """No BTC/USD rate is known, so USD-priced models cannot be priced now."""


@dataclass(frozen=True, slots=True)
class MediaRates:
    """A provider's media prices, markup included, in exact msat per unit (section 10).

    None where the provider sets no such price. Size and resolution keys are as in
    node.toml (``"1024x1024"``, ``"1024x1024/hd"``; ``"720p"``, ``"4K"``): the media
    routes read them (routstr_node.media.costs).
    """

    image_msat: Fraction | None = None  # per image, whatever its size
    image_msat_by_size: Mapping[str, Fraction] = field(default_factory=dict)
    char_msat: Fraction | None = None  # per character of speech input
    audio_msat_per_second: Fraction | None = None
    video_msat_per_second: Fraction | None = None
    video_msat_by_resolution: Mapping[str, Fraction] = field(default_factory=dict)

    @classmethod
    def from_offer(
        cls, offer: ProviderConfig, markup: Fraction, btc_usd: Decimal | None
    ) -> MediaRates:
        def one(usd: Decimal | None, sat: Decimal | None, units: int = 1) -> Fraction | None:
            if usd is None and sat is None:
                return None
            return _msat_per_unit(usd, sat, btc_usd, units) * markup

        def by_key(
            usd: Mapping[str, Decimal] | None, sat: Mapping[str, Decimal] | None
        ) -> dict[str, Fraction]:
            if sat is not None:
                return {key: _msat_per_unit(None, v, btc_usd, 1) * markup for key, v in sat.items()}
            return {
                key: _msat_per_unit(v, None, btc_usd, 1) * markup for key, v in (usd or {}).items()
            }

        return cls(
            image_msat=one(offer.image_usd, offer.image_sat),
            image_msat_by_size=by_key(offer.image_usd_by_size, offer.image_sat_by_size),
            char_msat=one(
                offer.input_usd_per_1m_chars, offer.input_sat_per_1m_chars, TOKENS_PER_PRICE_UNIT
            ),
            audio_msat_per_second=one(
                offer.audio_usd_per_minute, offer.audio_sat_per_minute, SECONDS_PER_MINUTE
            ),
            video_msat_per_second=one(offer.video_usd_per_second, offer.video_sat_per_second),
            video_msat_by_resolution=by_key(
                offer.video_usd_per_second_by_resolution, offer.video_sat_per_second_by_resolution
            ),
        )


NO_MEDIA = MediaRates()


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """What one model costs, markup included; token prices are exact msat per token."""

    input_msat_per_token: Fraction
    output_msat_per_token: Fraction
    request_msat: int
    max_output_tokens: int
    context_length: int
    min_request_msat: int = 0
    media: MediaRates = NO_MEDIA

    @classmethod
    def from_config(
        cls,
        model: ModelConfig,
        pricing: PricingSection,
        btc_usd: Decimal | None,
        offer: ProviderConfig | None = None,
    ) -> ModelPrice:
        """Price `model` through `offer` (one of its providers; default the first) at
        `btc_usd` (needed only when that provider's prices are in USD).

        The markup multiplies the token prices and the request fee; the request fee
        is then rounded up to the msat (it is a price, not a sum of token costs).
        """
        offer = model.offers[0] if offer is None else offer
        markup = (100 + Fraction(pricing.markup_percent)) / 100
        per_1m = TOKENS_PER_PRICE_UNIT
        input_price = _msat_per_unit(
            offer.input_usd_per_1m, offer.input_sat_per_1m, btc_usd, per_1m
        )
        output_price = _msat_per_unit(
            offer.output_usd_per_1m, offer.output_sat_per_1m, btc_usd, per_1m
        )
        return cls(
            input_msat_per_token=input_price * markup,
            output_msat_per_token=output_price * markup,
            request_msat=math.ceil(offer.request_sat * MSAT_PER_SAT * markup),
            max_output_tokens=model.max_output_tokens or 0,
            context_length=model.context_length or 0,
            min_request_msat=pricing.min_request_msat,
            media=NO_MEDIA
            if model.category.priced_by_tokens
            else MediaRates.from_offer(offer, markup, btc_usd),
        )


def _msat_per_unit(
    usd: Decimal | None, sat: Decimal | None, btc_usd: Decimal | None, units: int
) -> Fraction:
    """A config price (``usd`` or ``sat`` for ``units`` units) as exact msat per unit."""
    if sat is not None:
        return Fraction(sat) * MSAT_PER_SAT / units
    if usd is None:
        return Fraction(0)
    if btc_usd is None:
        raise PriceUnavailable("a model is priced in USD and no BTC/USD rate is known")
    return Fraction(usd) * MSAT_PER_BTC / Fraction(btc_usd) / units


@dataclass(frozen=True, slots=True)
class Cost:
    """A charge split for `usage.cost`; the parts always add up to the total."""

    input_msat: int
    output_msat: int
    request_msat: int

    @property
    def total_msat(self) -> int:
        return self.input_msat + self.output_msat + self.request_msat


def cost_msat(price: ModelPrice, input_tokens: int, output_tokens: int) -> Cost:
    """ceil(input_tokens × input_price + output_tokens × output_price) + request fee.

    The token part is rounded up once, as a whole. Its split: input_msat is the input
    part rounded up, output_msat the rest (never negative). When [pricing]
    min_request_msat is above the total, the difference is added to request_msat.
    """
    if input_tokens < 0 or output_tokens < 0:
        raise ValueError("token counts cannot be negative")
    # the same exact arithmetic in integers over a common denominator (Fractions are slow)
    ip, op = price.input_msat_per_token, price.output_msat_per_token
    denominator = ip.denominator * op.denominator
    input_num = input_tokens * ip.numerator * op.denominator
    tokens_num = input_num + output_tokens * op.numerator * ip.denominator
    tokens_msat = -(-tokens_num // denominator)
    input_msat = -(-input_num // denominator)
    return with_request_fee(price, input_msat, tokens_msat - input_msat)


def with_request_fee(price: ModelPrice, input_msat: int, output_msat: int) -> Cost:
    """The cost of what was used plus the request fee, raised to [pricing]
    min_request_msat when the total is below it."""
    request_msat = max(price.request_msat, price.min_request_msat - input_msat - output_msat)
    return Cost(input_msat, output_msat, request_msat)


def max_cost_msat(
    price: ModelPrice, prompt_tokens_estimate: int, max_output_tokens: int | None = None
) -> int:
    """The most a request can cost: what the node reserves before forwarding it.

    `max_output_tokens` is the request's `max_tokens` (None: the model's maximum). It
    is not capped at the model's maximum, so the reservation covers whatever the
    client allowed the upstream to produce.
    """
    output = price.max_output_tokens if max_output_tokens is None else max_output_tokens
    return cost_msat(price, prompt_tokens_estimate, output).total_msat


def max_listed_cost_msat(price: ModelPrice) -> int:
    """The most one request can cost: the context filled with input, the model's most
    output (what `sats_pricing.max_cost` shows, in sat)."""
    return max_cost_msat(price, price.context_length, price.max_output_tokens)


def pricing_fields(price: ModelPrice, *, most_msat: int | None = None) -> dict[str, dict[str, Any]]:
    """The `pricing` and `sats_pricing` objects of a GET /v1/models entry (display only).

    `max_cost` is the cost, in whole sat rounded up, of a request that fills the
    context with input and also produces the model's maximum output (``most_msat``
    when given: a model's is the largest over its providers). `request` is the
    flat fee in whole sat, rounded up too (the contract's `sat` fields are integers; a
    markup makes the fee fractional): what a client budgets is never short.
    """
    per_token_sat_in = price.input_msat_per_token / MSAT_PER_SAT
    per_token_sat_out = price.output_msat_per_token / MSAT_PER_SAT
    request_sat = -(-price.request_msat // MSAT_PER_SAT)
    max_cost = max_listed_cost_msat(price) if most_msat is None else most_msat
    return {
        "pricing": {
            "prompt": _display(per_token_sat_in * 1000),
            "completion": _display(per_token_sat_out * 1000),
            "request": request_sat,
            "unit": "1k tokens",
            "currency": "sat",
        },
        "sats_pricing": {
            "prompt": _display(per_token_sat_in),
            "completion": _display(per_token_sat_out),
            "request": request_sat,
            "max_cost": -(-max_cost // MSAT_PER_SAT),
        },
    }


def media_pricing_fields(media: MediaRates) -> dict[str, Any]:
    """A media model's prices in sat, as GET /v1/models shows them (display only): per
    image (and by size), per 1M characters, per minute of audio, per second of video
    (and by resolution). Only the prices the provider sets."""
    fields: dict[str, Any] = {}
    for name, rate, per in (
        ("image", media.image_msat, 1),
        ("per_1m_chars", media.char_msat, TOKENS_PER_PRICE_UNIT),
        ("per_minute", media.audio_msat_per_second, SECONDS_PER_MINUTE),
        ("per_second", media.video_msat_per_second, 1),
    ):
        if rate is not None:
            fields[name] = _display(rate * per / MSAT_PER_SAT)
    for name, by_key in (
        ("image_by_size", media.image_msat_by_size),
        ("per_second_by_resolution", media.video_msat_by_resolution),
    ):
        if by_key:
            fields[name] = {key: _display(rate / MSAT_PER_SAT) for key, rate in by_key.items()}
    return {**fields, "currency": "sat"} if fields else {}


def _display(value: Fraction) -> int | float:
    """A JSON number for people to read: rounded to 9 decimals, int when whole."""
    rounded = round(value, 9)
    return int(rounded) if rounded.denominator == 1 else float(rounded)


def _kraken(body: Any) -> Any:
    if body["error"]:
        raise ValueError(f"kraken: {body['error']}")
    (ticker,) = body["result"].values()
    return ticker["c"][0]  # last trade: [price, volume]


def _coinbase(body: Any) -> Any:
    return body["data"]["amount"]


SOURCE_URLS: Mapping[str, str] = {
    "kraken": "https://api.kraken.com/0/public/Ticker?pair=XBTUSD",
    "coinbase": "https://api.coinbase.com/v2/prices/BTC-USD/spot",
}
SOURCE_PARSERS: Mapping[str, Callable[[Any], Any]] = {"kraken": _kraken, "coinbase": _coinbase}


class BtcUsdRate:
    """The BTC/USD rate: the fixed one from [pricing], or the median of the live sources.

    A live rate is cached for `ttl_s`. When every source fails the last rate is
    used while it is younger than `stale_s`; after a failed round the sources are
    not asked again for `retry_s`, so an outage does not slow every request down.
    Build a new instance when [pricing] changes.
    """

    def __init__(
        self,
        pricing: PricingSection,
        session: aiohttp.ClientSession | None = None,
        *,
        urls: Mapping[str, str] | None = None,
        ttl_s: float = 60.0,
        stale_s: float = 3600.0,
        retry_s: float = 10.0,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if pricing.btc_usd is None and session is None:
            raise ValueError("a live BTC/USD rate needs an aiohttp session")
        self._fixed = pricing.btc_usd
        self._sources = list(pricing.price_sources)
        self._urls = {**SOURCE_URLS, **(urls or {})}
        self._session = session
        self._ttl_s, self._stale_s, self._retry_s = ttl_s, stale_s, retry_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._clock = clock
        self._lock = asyncio.Lock()
        self._rate: Decimal | None = None
        self._rate_at = 0.0
        self._failed_at: float | None = None

    def for_pricing(self, pricing: PricingSection) -> BtcUsdRate:
        """The rate for changed [pricing]: same session and timings; a live rate already
        known is kept when the sources stay the same."""
        rate = BtcUsdRate(
            pricing,
            self._session,
            urls=self._urls,
            ttl_s=self._ttl_s,
            stale_s=self._stale_s,
            retry_s=self._retry_s,
            timeout_s=self._timeout.total or 5.0,
            clock=self._clock,
        )
        if rate._sources == self._sources:
            rate._rate, rate._rate_at = self._rate, self._rate_at
        return rate

    async def get(self) -> Decimal:
        """The rate in USD per BTC; raises PriceUnavailable when none is usable."""
        if self._fixed is not None:
            return self._fixed
        if self._is_fresh(self._ttl_s):
            assert self._rate is not None
            return self._rate
        async with self._lock:
            return await self._refresh()

    def _is_fresh(self, max_age_s: float) -> bool:
        return self._rate is not None and self._clock() - self._rate_at < max_age_s

    async def _refresh(self) -> Decimal:
        if self._rate is not None and self._is_fresh(self._ttl_s):
            return self._rate  # another request refreshed it while this one waited
        if self._failed_at is None or self._clock() - self._failed_at >= self._retry_s:
            rate = await self._ask_sources()
            if rate is not None:
                self._rate, self._rate_at, self._failed_at = rate, self._clock(), None
                return rate
            self._failed_at = self._clock()
        if self._rate is not None and self._is_fresh(self._stale_s):
            return self._rate
        raise PriceUnavailable(f"no BTC/USD rate: {', '.join(self._sources)} did not answer")

    async def _ask_sources(self) -> Decimal | None:
        answers = await asyncio.gather(
            *(self._ask(name) for name in self._sources), return_exceptions=True
        )
        rates = []
        for name, answer in zip(self._sources, answers, strict=True):
            if isinstance(answer, Decimal):
                rates.append(answer)
            else:
                log.warning("BTC/USD price source %s failed: %r", name, answer)
        return _median(rates) if rates else None

    async def _ask(self, name: str) -> Decimal:
        assert self._session is not None
        async with self._session.get(self._urls[name], timeout=self._timeout) as response:
            response.raise_for_status()
            text = await response.text()
        value = SOURCE_PARSERS[name](json.loads(text, parse_float=Decimal))
        if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
            raise ValueError(f"{name}: price is not a number: {value!r}")
        try:
            rate = Decimal(value)
        except InvalidOperation:
            raise ValueError(f"{name}: price is not a number: {value!r}") from None
        if not rate.is_finite() or rate <= 0:
            raise ValueError(f"{name}: price out of range: {rate}")
        return rate


def _median(values: list[Decimal]) -> Decimal:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2
