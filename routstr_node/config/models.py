"""The settings the node understands: one pydantic model per node.toml section.

Every model forbids unknown keys, so a typo stops the node instead of being ignored.
Prices are Decimal (TOML floats are parsed as Decimal), amounts are integers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Self
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from routstr_node.config.errors import FieldError, from_validation_error
from routstr_node.config.patch import merge_patch, redact, restore_redacted

#: Price sources the node knows how to read (see routstr_node.pricing).
KNOWN_PRICE_SOURCES = ("kraken", "coinbase")


def _http_url(value: str) -> str:
    return _checked_url(value, ("http", "https"))


def _ws_url(value: str) -> str:
    return _checked_url(value, ("ws", "wss"))


def _checked_url(value: str, schemes: tuple[str, ...]) -> str:
    """Accept only absolute URLs of the given schemes; drop the trailing slash."""
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.netloc:
        raise ValueError(f"'{value}' is not a {'/'.join(schemes)} URL")
    return value.rstrip("/")


HttpUrl = Annotated[str, AfterValidator(_http_url)]
WsUrl = Annotated[str, AfterValidator(_ws_url)]
Name = Annotated[str, Field(min_length=1)]
Secret = Annotated[str, Field(min_length=1)]
# bounded so that a price computed from them stays inside the ledger's range (2^62 msat)
Count = Annotated[int, Field(strict=True, gt=0, le=10**9)]
NonNegative = Annotated[int, Field(strict=True, ge=0, le=10**12)]
# bounded so that every price stays an exact number the node can print and compute with
# quickly (a price of 1e-10000000 would be ten million digits of work on each request)
_MOST = Decimal(10**12)
_DIGITS = 18  # decimal places: a millionth of a msat per token is far below any price
Price = Annotated[Decimal, Field(ge=0, le=_MOST, decimal_places=_DIGITS)]
# USD prices turn into sat at btc_usd (at least 1): at most 1e14 sat per 1M tokens
UsdPrice = Annotated[Decimal, Field(ge=0, le=10**6, decimal_places=_DIGITS)]


class _Section(BaseModel):
    """Frozen, so settings can be shared by concurrent requests; an admin change builds new ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeSection(_Section):
    """Who the node is and where it listens; `data_dir` is used as given (relative to cwd)."""

    # both go into every payment request and the Nostr announcement: kept short
    name: Annotated[str, Field(max_length=200)] = "Example Node"
    description: Annotated[str, Field(max_length=2000)] = "Pay-per-request AI with Cashu ecash"
    host: Name = "127.0.0.1"
    port: Annotated[int, Field(strict=True, ge=1, le=65535)] = 8000
    data_dir: Path = Path("./data")
    public_url: str = ""

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        return _http_url(value) if value else value

    @field_serializer("data_dir")
    def _dump_data_dir(self, value: Path) -> str:
        return str(value)


class MintsSection(_Section):
    """`timeout_s`: how long the node waits for a mint's answer. An answer that does not
    come in time leaves the operation unresolved, never undone: the node asks again."""

    trusted: Annotated[list[HttpUrl], Field(min_length=1)]
    timeout_s: Annotated[float, Field(gt=0, le=3600)] = 30

    @field_validator("trusted")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        for i, url in enumerate(value):
            if url in value[:i]:
                raise FieldError((i,), f"'{url}' is listed twice")
        return value

    @property
    def primary(self) -> str:
        """Change and withdrawals come from the first trusted mint."""
        return self.trusted[0]


class PricingSection(_Section):
    """`btc_usd` unset means the live rate from `price_sources`."""

    btc_usd: Annotated[Decimal, Field(ge=1, le=_MOST, decimal_places=_DIGITS)] | None = None
    price_sources: list[str] = Field(default_factory=lambda: list(KNOWN_PRICE_SOURCES))
    markup_percent: Price = Decimal(0)
    min_request_msat: NonNegative = 0

    @field_validator("price_sources")
    @classmethod
    def _known_sources(cls, value: list[str]) -> list[str]:
        for i, source in enumerate(value):
            if source not in KNOWN_PRICE_SOURCES:
                known = ", ".join(KNOWN_PRICE_SOURCES)
                raise FieldError((i,), f"unknown price source '{source}' (known: {known})")
            if source in value[:i]:
                raise FieldError((i,), f"'{source}' is listed twice")
        return value

    @model_validator(mode="after")
    def _has_a_rate(self) -> Self:
        if self.btc_usd is None and not self.price_sources:
            raise FieldError(("price_sources",), "needs a source when btc_usd is not set")
        return self


class UpstreamConfig(_Section):
    """An OpenAI-compatible API the node forwards to. `timeout_s` is a duration, not money."""

    name: Name
    base_url: HttpUrl
    api_key: Secret | None = None
    api_key_env: Name | None = None
    timeout_s: Annotated[float, Field(gt=0, le=86_400)] = 300


class ModelConfig(_Section):
    """A model the node sells. Each direction is priced in USD or sat per 1M tokens, not both."""

    id: Name
    upstream: Name
    upstream_model: Name | None = None
    input_usd_per_1m: UsdPrice | None = None
    input_sat_per_1m: Price | None = None
    output_usd_per_1m: UsdPrice | None = None
    output_sat_per_1m: Price | None = None
    request_sat: NonNegative = 0
    context_length: Count
    max_output_tokens: Count

    @model_validator(mode="before")
    @classmethod
    def _default_upstream_model(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("upstream_model") is None and "id" in data:
            return {**data, "upstream_model": data["id"]}
        return data

    @model_validator(mode="after")
    def _check(self) -> Self:
        for direction in ("input", "output"):
            usd, sat = f"{direction}_usd_per_1m", f"{direction}_sat_per_1m"
            if getattr(self, usd) is not None and getattr(self, sat) is not None:
                raise FieldError((sat,), f"give {usd} or {sat}, not both")
        if self.max_output_tokens > self.context_length:
            raise FieldError(("max_output_tokens",), "is larger than context_length")
        return self


class AdminSection(_Section):
    """Unset password (also after `password_env`): the node generates one at first start."""

    password: Secret | None = None
    password_env: Name | None = "ROUTSTR_ADMIN_PASSWORD"


class LimitsSection(_Section):
    """`body_timeout_s`: a request body from which no byte came for this long is cut (408):
    a client that stops sending would otherwise hold a connection and a handler for ever."""

    requests_per_minute: Count = 60
    requests_per_hour: Count = 1000
    requests_per_day: Count = 10000
    max_body_bytes: Count = 10485760
    body_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 30


class NostrSection(_Section):
    """Unset key (also after `nsec_env`): the node generates one and keeps it in data_dir."""

    relays: list[WsUrl] = Field(default_factory=list)
    nsec: Secret | None = None
    nsec_env: Name | None = "ROUTSTR_NSEC"
    announce: Annotated[bool, Field(strict=True)] = False


class Settings(_Section):
    """All of node.toml. Secrets named by `*_env` are filled in by `with_env_secrets`."""

    node: NodeSection = Field(default_factory=NodeSection)
    mints: MintsSection
    pricing: PricingSection = Field(default_factory=PricingSection)
    upstreams: list[UpstreamConfig] = Field(default_factory=list)
    models: list[ModelConfig] = Field(default_factory=list)
    admin: AdminSection = Field(default_factory=AdminSection)
    limits: LimitsSection = Field(default_factory=LimitsSection)
    nostr: NostrSection = Field(default_factory=NostrSection)

    @model_validator(mode="after")
    def _cross_check(self) -> Self:
        names: set[str] = set()
        for i, upstream in enumerate(self.upstreams):
            if upstream.name in names:
                raise FieldError(("upstreams", i, "name"), f"duplicate upstream '{upstream.name}'")
            names.add(upstream.name)
        ids: set[str] = set()
        for i, model in enumerate(self.models):
            if model.id in ids:
                raise FieldError(("models", i, "id"), f"duplicate model '{model.id}'")
            ids.add(model.id)
            if model.upstream not in names:
                raise FieldError(("models", i, "upstream"), f"no upstream named '{model.upstream}'")
        return self

    def upstream(self, name: str) -> UpstreamConfig:
        """The upstream a model names (validation guarantees it exists); KeyError otherwise."""
        for upstream in self.upstreams:
            if upstream.name == name:
                return upstream
        raise KeyError(name)

    def model(self, model_id: str) -> ModelConfig | None:
        return next((m for m in self.models if m.id == model_id), None)

    def to_dict(self) -> dict[str, Any]:
        """The settings in the shape of node.toml, secrets included, Decimals kept."""
        return self.model_dump()

    def redacted(self) -> dict[str, Any]:
        """`to_dict` with every secret that is set shown as "[REDACTED]" (for the admin API)."""
        return redact(self.to_dict())

    def with_env_secrets(self, environ: Mapping[str, str]) -> Settings:
        """Fill each unset secret from the variable its `*_env` key names.

        A secret given directly (in the file, an override or the admin API) wins over
        its `*_env`; an unset or empty variable leaves the secret unset (the admin
        password and the nostr key are then generated, an upstream gets no key).
        """

        def pick(direct: str | None, env_name: str | None) -> str | None:
            if direct is not None or env_name is None:
                return direct
            return environ.get(env_name) or None

        return self.model_copy(
            update={
                "upstreams": [
                    u.model_copy(update={"api_key": pick(u.api_key, u.api_key_env)})
                    for u in self.upstreams
                ],
                "admin": self.admin.model_copy(
                    update={"password": pick(self.admin.password, self.admin.password_env)}
                ),
                "nostr": self.nostr.model_copy(
                    update={"nsec": pick(self.nostr.nsec, self.nostr.nsec_env)}
                ),
            }
        )

    def merged(
        self, patch: Mapping[str, Any], environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Apply an admin PATCH: sections merge key by key, lists are replaced whole,
        "[REDACTED]" keeps the current secret. Raises ConfigError with `param` set."""
        current = self.to_dict()
        data = merge_patch(current, patch)
        restore_redacted(data, current)
        try:
            settings = Settings.model_validate(data)
        except ValidationError as exc:
            raise from_validation_error(exc, source=None) from None
        return settings.with_env_secrets(os.environ if environ is None else environ)
