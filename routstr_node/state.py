"""What the node's handlers share, under typed application keys."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from decimal import Decimal

from aiohttp import web

from mints.directory import MintDirectory
from routstr_node.config import ModelConfig, Settings
from routstr_node.identity import load_secret, npub
from routstr_node.metrics import Metrics
from routstr_node.pricing import BtcUsdRate, ModelPrice, PriceUnavailable
from routstr_node.ratelimit import RateLimiter
from routstr_node.routing import ProviderBoard
from routstr_node.upstream import Upstreams
from wallet import WalletService


class Unsettled:
    """Paid calls reserved and not settled yet: the wallet stays open for them at a stop.

    A handler cancelled at the end of the shutdown grace leaves its settlement running
    (shielded); closing the database under it would leave the reservation open.
    """

    def __init__(self) -> None:
        self._count = 0
        self._none = asyncio.Event()
        self._none.set()

    def add(self) -> None:
        self._count += 1
        self._none.clear()

    def remove(self) -> None:
        self._count -= 1
        if self._count == 0:
            self._none.set()

    @property
    def none(self) -> bool:
        """Whether every call was settled."""
        return self._count == 0

    async def drained(self, timeout_s: float) -> bool:
        """Whether every call was settled within ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._none.wait()
        except TimeoutError:
            return False
        return True


@dataclass
class NodeState:
    """The running node: settings (replaceable at run time) and its long-lived parts."""

    settings: Settings
    mints: MintDirectory
    wallet: WalletService
    upstreams: Upstreams
    rate: BtcUsdRate
    limiter: RateLimiter
    metrics: Metrics
    npub: str
    shared_nostr_key: bytes | None = field(default=None, repr=False)  # never logged
    started_at: float = field(default_factory=time.time)
    unsettled: Unsettled = field(default_factory=Unsettled)
    board: ProviderBoard = field(default_factory=ProviderBoard)

    _prices: dict[tuple[str, Decimal | None], tuple[ModelPrice, ...]] = field(default_factory=dict)
    _prices_for: Settings | None = None

    async def prices(self, model: ModelConfig) -> tuple[ModelPrice, ...]:
        """The price now through each of the model's providers (``model.offers``' order);
        USD prices at the current rate (PriceUnavailable without one).

        Prices are exact Fractions, worth computing once per settings and rate.
        """
        btc_usd = await self.rate.get() if model.uses_usd else None
        if self._prices_for is not self.settings or len(self._prices) > 1024:
            self._prices.clear()
            self._prices_for = self.settings
        key = (model.id, btc_usd)
        prices = self._prices.get(key)
        if prices is None:
            pricing = self.settings.pricing
            prices = tuple(
                ModelPrice.from_config(model, pricing, btc_usd, offer) for offer in model.offers
            )
            self._prices[key] = prices
        return prices

    async def apply(self, new: Settings) -> None:
        """Run on new settings from now on (an admin change). What cannot change while
        the node runs (where it listens, its data_dir) was refused before."""
        old = self.settings
        if new.upstreams != old.upstreams:
            await self.upstreams.configure(list(new.upstreams))
        if new.mints.trusted != old.mints.trusted:
            self.mints.trust(list(new.mints.trusted))
        if new.pricing != old.pricing:
            self.rate = self.rate.for_pricing(new.pricing)
        if new.limits != old.limits:
            limits = new.limits
            self.limiter.configure(
                limits.requests_per_minute, limits.requests_per_hour, limits.requests_per_day
            )
        if new.nostr.nsec != old.nostr.nsec:
            self.npub = npub(load_secret(new.node.data_dir, new.nostr.nsec, self.shared_nostr_key))
        self.settings = new

    async def btc_usd_or_none(self) -> Decimal | None:
        try:
            return await self.rate.get()
        except PriceUnavailable:
            return None


NODE = web.AppKey("node", NodeState)
REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id")
# headers every answer carries (request id, rate limits), also streams prepared early
RESPONSE_HEADERS: web.RequestKey[dict[str, str]] = web.RequestKey("response_headers")
COUNTED_STREAM: web.RequestKey[bool] = web.RequestKey("counted_stream")
