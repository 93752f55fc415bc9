"""The settings the node understands: one pydantic model per node.toml section.

Every model forbids unknown keys, so a typo stops the node instead of being ignored.
Prices are Decimal (TOML floats are parsed as Decimal), amounts are integers.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Self
from urllib.parse import urlsplit

from pydantic import (
    Field,
    PrivateAttr,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from routstr_node.config.catalog import ModelConfig
from routstr_node.config.errors import FieldError, from_validation_error
from routstr_node.config.fields import (
    DIGITS,
    MOST,
    Count,
    Flag,
    HttpUrl,
    Name,
    NonNegative,
    Price,
    Secret,
    Section,
    WsUrl,
    http_url,
    private,
)
from routstr_node.config.patch import merge_patch, redact, restore_redacted

#: Price sources the node knows how to read (see routstr_node.pricing).
KNOWN_PRICE_SOURCES = ("kraken", "coinbase")


class NodeSection(Section):
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
        return http_url(value) if value else value

    @field_serializer("data_dir")
    def _dump_data_dir(self, value: Path) -> str:
        return str(value)


class MintsSection(Section):
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


class PricingSection(Section):
    """`btc_usd` unset means the live rate from `price_sources`."""

    btc_usd: Annotated[Decimal, Field(ge=1, le=MOST, decimal_places=DIGITS)] | None = None
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


class UpstreamConfig(Section):
    """An OpenAI-compatible API the node forwards to. `timeout_s` is a duration, not money."""

    name: Name
    base_url: HttpUrl
    api_key: Secret | None = None
    api_key_env: Name | None = None
    timeout_s: Annotated[float, Field(gt=0, le=86_400)] = 300


class AdminSection(Section):
    """Unset password (also after `password_env`): the node generates one at first start."""

    password: Secret | None = None
    password_env: Name | None = "ROUTSTR_ADMIN_PASSWORD"


class LimitsSection(Section):
    """`body_timeout_s`: a request body from which no byte came for this long is cut (408):
    a client that stops sending would otherwise hold a connection and a handler for ever.
    `max_upload_bytes`: the bound of an audio upload (a transcription's multipart body),
    above OpenAI's 25 MB per file; other bodies are bound by `max_body_bytes`."""

    requests_per_minute: Count = 60
    requests_per_hour: Count = 1000
    requests_per_day: Count = 10000
    max_body_bytes: Count = 10485760
    max_upload_bytes: Count = 27262976
    body_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 30


class NostrSection(Section):
    """Unset key (also after `nsec_env`): the node generates one and keeps it in data_dir."""

    relays: list[WsUrl] = Field(default_factory=list)
    nsec: Secret | None = None
    nsec_env: Name | None = "ROUTSTR_NSEC"
    announce: Flag = False


def _not_built(what: str) -> str:
    return f"not supported by this version yet ({what} come in a later version)"


class LogsSection(Section):
    retention_days: Count = 30  # usage records (per request) are kept this long
    usage_records: Flag = True  # false: no usage records (history, admin usage stay empty)
    # one JSON line per request (request id, route, status, latency, model, provider,
    # cost; never a key or a token) appended to this file; "-": standard output; "": off
    access_log: str = ""


class SessionsSection(Section):
    """Conversation sessions (contract section 11), off by default."""

    enabled: Flag = False
    ttl_hours: Count = 24
    max_messages: Count = 50


class DatabaseSection(Section):
    """Empty `url`: the SQLite file in data_dir. A PostgreSQL URL may hold a password:
    it is a secret (also as `url_env`)."""

    url: str = ""
    url_env: Name | None = None

    @field_validator("url", mode="before")
    @classmethod
    def _unset(cls, value: Any) -> Any:
        return "" if value is None else value  # a secret cleared in the admin panel

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value:
            return value
        if urlsplit(value).scheme not in ("postgresql", "postgres"):
            raise ValueError("must be empty (SQLite in data_dir) or a postgresql:// URL")
        return value


class PayoutSection(Section):
    """Earnings paid out to a Lightning address (contract section 13)."""

    lightning_address: str = ""
    min_sat: NonNegative = 1000
    interval_minutes: Count = 60

    @field_validator("lightning_address")
    @classmethod
    def _address(cls, value: str) -> str:
        if not value:
            return value
        if not (_LIGHTNING_ADDRESS.fullmatch(value) or _lnurl_url(value)):
            raise ValueError(
                f"'{value}' is not a Lightning address (name@domain) or an LNURL-pay https URL"
            )
        return value


_LIGHTNING_ADDRESS = re.compile(r"[a-z0-9._+-]+@[a-z0-9-]+(\.[a-z0-9-]+)+", re.IGNORECASE)
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def _lnurl_url(value: str) -> bool:
    parts = urlsplit(value)
    if not parts.netloc:
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS)


class Settings(Section):
    """All of node.toml. Secrets named by `*_env` are filled in by `with_env_secrets`."""

    node: NodeSection = Field(default_factory=NodeSection)
    mints: MintsSection
    pricing: PricingSection = Field(default_factory=PricingSection)
    upstreams: list[UpstreamConfig] = Field(default_factory=list)
    models: list[ModelConfig] = Field(default_factory=list)
    admin: AdminSection = Field(default_factory=AdminSection)
    limits: LimitsSection = Field(default_factory=LimitsSection)
    logs: LogsSection = Field(default_factory=LogsSection)
    sessions: SessionsSection = Field(default_factory=SessionsSection)
    database: DatabaseSection = Field(default_factory=DatabaseSection)
    nostr: NostrSection = Field(default_factory=NostrSection)
    payout: PayoutSection = Field(default_factory=PayoutSection)

    _models_by_id: dict[str, ModelConfig] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _cross_check(self) -> Self:
        names: set[str] = set()
        for i, upstream in enumerate(self.upstreams):
            if upstream.name in names:
                raise FieldError(("upstreams", i, "name"), f"duplicate upstream '{upstream.name}'")
            names.add(upstream.name)
        by_id: dict[str, ModelConfig] = {}
        for i, model in enumerate(self.models):
            if model.id in by_id:
                raise FieldError(("models", i, "id"), f"duplicate model '{model.id}'")
            by_id[model.id] = model
            for j, offer in enumerate(model.offers):
                if offer.upstream not in names:
                    where = ("models", i, *model.offer_loc(j))
                    raise FieldError(where, f"no upstream named '{offer.upstream}'")
        self._models_by_id = by_id
        return self

    def upstream(self, name: str) -> UpstreamConfig:
        """The upstream a model names (validation guarantees it exists); KeyError otherwise."""
        for upstream in self.upstreams:
            if upstream.name == name:
                return upstream
        raise KeyError(name)

    def model(self, model_id: str) -> ModelConfig | None:
        by_id: dict[str, ModelConfig] = private(self)["_models_by_id"]
        return by_id.get(model_id)

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
                "database": self.database.model_copy(
                    update={"url": pick(self.database.url or None, self.database.url_env) or ""}
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
