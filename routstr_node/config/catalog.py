"""The models the node sells (`[[models]]`) and the providers each is sold through.

A model has the one-provider form (`upstream`, prices and the provider's other keys on
the model itself) or lists `[[models.providers]]`; the two do not mix in one model.
Either way `ModelConfig.offers` is the list of providers, in node.toml's order.
Prices are Decimal here; routstr_node.pricing turns them into exact msat.
"""

from __future__ import annotations

import re
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import AfterValidator, Field, PrivateAttr, model_validator

from routstr_node.config.errors import FieldError
from routstr_node.config.fields import (
    Count,
    Flag,
    Name,
    NonNegative,
    Price,
    Section,
    UsdPrice,
    private,
)


class ModelCategory(StrEnum):
    """Which routes serve a model (contract section 10)."""

    CHAT = "chat"
    EMBEDDING = "embedding"
    IMAGE = "image"
    SPEECH = "speech"
    TRANSCRIPTION = "transcription"
    VIDEO = "video"

    @property
    def priced_by_tokens(self) -> bool:
        """Served on the token routes (chat, completions, responses, embeddings)."""
        return self in (ModelCategory.CHAT, ModelCategory.EMBEDDING)


class DataCollection(StrEnum):
    ALLOW = "allow"
    DENY = "deny"  # the provider keeps no prompts for training


# "1024x1024", or with a quality: "1024x1024/hd"
_IMAGE_SIZE = re.compile(r"[1-9][0-9]{0,4}x[1-9][0-9]{0,4}(/[a-z0-9_-]{1,32})?")
# "720p", "1080p", "4K"
_RESOLUTION = re.compile(r"[1-9][0-9]{2,3}p|[1-9][0-9]?K")


def _keys_match(pattern: re.Pattern[str], example: str) -> Any:
    def check(value: dict[str, Decimal]) -> dict[str, Decimal]:
        for key in value:
            if not pattern.fullmatch(key):
                raise FieldError((key,), f"'{key}' is not a key like {example}")
        return value

    return AfterValidator(check)


SizePrices = Annotated[dict[str, Price], _keys_match(_IMAGE_SIZE, '"1024x1024" or "1024x1024/hd"')]
UsdSizePrices = Annotated[
    dict[str, UsdPrice], _keys_match(_IMAGE_SIZE, '"1024x1024" or "1024x1024/hd"')
]
ResolutionPrices = Annotated[dict[str, Price], _keys_match(_RESOLUTION, '"720p" or "4K"')]
UsdResolutionPrices = Annotated[dict[str, UsdPrice], _keys_match(_RESOLUTION, '"720p" or "4K"')]

# what thinking_params may not set: what the request itself decides, and the output cap
# the reservation is computed from
_NOT_THINKING_PARAMS = frozenset(
    {
        "model",
        "messages",
        "prompt",
        "input",
        "stream",
        "stream_options",
        "provider",
        "n",
        "best_of",
        "max_tokens",
        "max_completion_tokens",
        "max_output_tokens",
    }
)


def _json_value(value: Any, loc: tuple[str | int, ...]) -> Any:
    """A TOML value as the JSON it is forwarded as (TOML floats arrive as Decimal: a
    request parameter like a temperature, not an amount, so a float is right here)."""
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise FieldError(loc, "must be a finite number")
        return int(value) if value == value.to_integral_value() else float(value)
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, list):
        return [_json_value(v, (*loc, i)) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {str(k): _json_value(v, (*loc, str(k))) for k, v in value.items()}
    raise FieldError(loc, f"{type(value).__name__} cannot be sent in a JSON request")


def _thinking_params(value: dict[str, Any]) -> dict[str, Any]:
    for key in value:
        if key in _NOT_THINKING_PARAMS:
            raise FieldError((key,), f"'{key}' is the request's own, not a thinking parameter")
    return {key: _json_value(item, (key,)) for key, item in value.items()}


ThinkingParams = Annotated[dict[str, Any], AfterValidator(_thinking_params)]

#: (usd key, sat key) of every price: each is given in one currency, not both
PRICE_PAIRS: tuple[tuple[str, str], ...] = tuple(
    (f"{prefix}_usd{suffix}", f"{prefix}_sat{suffix}")
    for prefix, suffix in (
        ("input", "_per_1m"),
        ("output", "_per_1m"),
        ("image", ""),
        ("image", "_by_size"),
        ("input", "_per_1m_chars"),
        ("audio", "_per_minute"),
        ("video", "_per_second"),
        ("video", "_per_second_by_resolution"),
    )
)


class _Offer(Section):
    """What one provider of a model says: its name for the model, prices, and how it
    serves (data collection, retention, parameters, variants)."""

    upstream: Name | None = None
    upstream_model: Name | None = None
    input_usd_per_1m: UsdPrice | None = None
    input_sat_per_1m: Price | None = None
    output_usd_per_1m: UsdPrice | None = None
    output_sat_per_1m: Price | None = None
    request_sat: NonNegative = 0
    image_usd: UsdPrice | None = None
    image_sat: Price | None = None
    image_usd_by_size: UsdSizePrices | None = None
    image_sat_by_size: SizePrices | None = None
    input_usd_per_1m_chars: UsdPrice | None = None
    input_sat_per_1m_chars: Price | None = None
    audio_usd_per_minute: UsdPrice | None = None
    audio_sat_per_minute: Price | None = None
    video_usd_per_second: UsdPrice | None = None
    video_sat_per_second: Price | None = None
    video_usd_per_second_by_resolution: UsdResolutionPrices | None = None
    video_sat_per_second_by_resolution: ResolutionPrices | None = None
    data_collection: DataCollection = DataCollection.ALLOW
    zdr: Flag = False
    supported_parameters: list[Name] | None = None  # None: every parameter
    online: Flag = False
    thinking: Flag = False
    thinking_params: ThinkingParams = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_currency_per_price(self) -> Self:
        for usd, sat in PRICE_PAIRS:
            if getattr(self, usd) is not None and getattr(self, sat) is not None:
                raise FieldError((sat,), f"give {usd} or {sat}, not both")
        return self

    @property
    def uses_usd(self) -> bool:
        """Whether pricing this provider needs the BTC/USD rate."""
        return any(getattr(self, usd) is not None for usd, _ in PRICE_PAIRS)

    @property
    def is_unpriced(self) -> bool:
        """No price of any kind: served for nothing, most likely by mistake."""
        # a price of 0 is free on purpose: said so
        priced = any(getattr(self, key) is not None for pair in PRICE_PAIRS for key in pair)
        return not priced and not self.request_sat


class ProviderConfig(_Offer):
    """One `[[models.providers]]` table: an `[[upstreams]]` name and its offer."""

    upstream: Name
    upstream_model: Name  # the model's id when not given


_OFFER_KEYS = tuple(k for k in _Offer.model_fields if k != "upstream")


class _ModelHead(Section):
    id: Name
    display_name: Name | None = None  # the id when not given
    category: ModelCategory = ModelCategory.CHAT
    capabilities: list[Name] = Field(default_factory=list)
    context_length: Count | None = None  # required for chat and embedding models
    max_output_tokens: Count | None = None  # required for chat models
    max_audio_seconds: Count = 1500  # a transcription whose audio cannot be read
    default_video_seconds: Count | None = None  # a video request that names no duration


class ModelConfig(_Offer, _ModelHead):
    """A model the node sells, through one provider or several."""

    providers: list[ProviderConfig] | None = None

    _offers: tuple[ProviderConfig, ...] = PrivateAttr(default=())
    _uses_usd: bool = PrivateAttr(default=False)

    @model_validator(mode="before")
    @classmethod
    def _defaults_from_id(cls, data: Any) -> Any:
        """Each provider's `upstream_model` defaults to the id."""
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            return data
        data = {**data}
        providers = data.get("providers")
        if providers is None:
            if data.get("upstream_model") is None:
                data["upstream_model"] = data["id"]
        elif isinstance(providers, list):
            data["providers"] = [
                {**p, "upstream_model": data["id"]}
                if isinstance(p, dict) and p.get("upstream_model") is None
                else p
                for p in providers
            ]
        return data

    @model_validator(mode="after")
    def _check(self) -> Self:
        self._offers = self._offers_in_order()
        self._uses_usd = any(offer.uses_usd for offer in self._offers)
        if self.category.priced_by_tokens and self.context_length is None:
            raise FieldError(("context_length",), f"Field required (a {self.category} model)")
        if self.category is ModelCategory.CHAT and self.max_output_tokens is None:
            raise FieldError(("max_output_tokens",), "Field required (a chat model)")
        if (
            self.max_output_tokens is not None
            and self.context_length is not None
            and self.max_output_tokens > self.context_length
        ):
            raise FieldError(("max_output_tokens",), "is larger than context_length")
        return self

    def _offers_in_order(self) -> tuple[ProviderConfig, ...]:
        if self.providers is None:
            if self.upstream is None:
                raise FieldError(("upstream",), "Field required (or list [[models.providers]])")
            own = {key: getattr(self, key) for key in ("upstream", *_OFFER_KEYS)}
            return (ProviderConfig.model_validate(own),)
        if not self.providers:
            raise FieldError(("providers",), "lists no provider")
        for key in ("upstream", *_OFFER_KEYS):
            field = _Offer.model_fields[key]
            default = field.get_default(call_default_factory=True)
            if getattr(self, key) != default:
                raise FieldError(
                    (key,), "belongs in each [[models.providers]] table of a model that lists them"
                )
        seen: set[str] = set()
        for j, provider in enumerate(self.providers):
            if provider.upstream in seen:
                raise FieldError(
                    ("providers", j, "upstream"), f"upstream '{provider.upstream}' is listed twice"
                )
            seen.add(provider.upstream)
        return tuple(self.providers)

    @property
    def listed_name(self) -> str:
        """The name people see: `display_name`, else the id."""
        return self.display_name or self.id

    @property
    def offers(self) -> tuple[ProviderConfig, ...]:
        """The model's providers in node.toml's order (the one-provider form: one)."""
        offers: tuple[ProviderConfig, ...] = private(self)["_offers"]
        return offers

    @property
    def uses_usd(self) -> bool:
        """Whether pricing any of its providers needs the BTC/USD rate."""
        return bool(private(self)["_uses_usd"])

    def offer(self, upstream: str) -> ProviderConfig | None:
        return next((o for o in self.offers if o.upstream == upstream), None)

    def offer_loc(self, index: int) -> tuple[str | int, ...]:
        """Where provider ``index`` is written in this model's table (for errors)."""
        return ("upstream",) if self.providers is None else ("providers", index, "upstream")
