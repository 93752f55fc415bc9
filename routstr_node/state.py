"""What the node's handlers share, under typed application keys."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from decimal import Decimal

from aiohttp import web

from mints.directory import MintDirectory
from routstr_node.config import Settings
from routstr_node.identity import load_secret, npub
from routstr_node.metrics import Metrics
from routstr_node.pricing import BtcUsdRate, ModelPrice, PriceUnavailable
from routstr_node.ratelimit import RateLimiter
from routstr_node.upstream import Upstreams
from wallet.service import WalletService


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
    started_at: float = field(default_factory=time.time)
    unsettled: Unsettled = field(default_factory=Unsettled)

    _prices: dict[tuple[str, Decimal | None], ModelPrice] = field(default_factory=dict)
    _prices_for: Settings | None = None

    async def price(self, model_id: str) -> ModelPrice | None:
        """The model's price now (None: not offered); USD prices at the current rate.

        Prices are exact Fractions, worth computing once per settings and rate.
        """
        model = self.settings.model(model_id)
        if model is None:
            return None
        btc_usd: Decimal | None = None
        if model.uses_usd:
            btc_usd = await self.rate.get()
        if self._prices_for is not self.settings or len(self._prices) > 1024:
            self._prices.clear()
            self._prices_for = self.settings
        key = (model_id, btc_usd)
        price = self._prices.get(key)
        if price is None:
            price = ModelPrice.from_config(model, self.settings.pricing, btc_usd)
            self._prices[key] = price
        return price

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
            self.npub = npub(load_secret(new.node.data_dir, new.nostr.nsec))
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
