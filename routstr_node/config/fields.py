"""Value types shared by the settings models: URLs, names, counts and exact prices."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def http_url(value: str) -> str:
    return checked_url(value, ("http", "https"))


def ws_url(value: str) -> str:
    return checked_url(value, ("ws", "wss"))


def checked_url(value: str, schemes: tuple[str, ...]) -> str:
    """Accept only absolute URLs of the given schemes; drop the trailing slash."""
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.netloc:
        raise ValueError(f"'{value}' is not a {'/'.join(schemes)} URL")
    return value.rstrip("/")


HttpUrl = Annotated[str, AfterValidator(http_url)]
WsUrl = Annotated[str, AfterValidator(ws_url)]
Name = Annotated[str, Field(min_length=1)]
Secret = Annotated[str, Field(min_length=1)]
Flag = Annotated[bool, Field(strict=True)]
# bounded so that a price computed from them stays inside the ledger's range (2^62 msat)
Count = Annotated[int, Field(strict=True, gt=0, le=10**9)]
NonNegative = Annotated[int, Field(strict=True, ge=0, le=10**12)]
# bounded so that every price stays an exact number the node can print and compute with
# quickly (a price of 1e-10000000 would be ten million digits of work on each request)
MOST = Decimal(10**12)
DIGITS = 18  # decimal places: a millionth of a msat per token is far below any price
Price = Annotated[Decimal, Field(ge=0, le=MOST, decimal_places=DIGITS)]
# USD prices turn into sat at btc_usd (at least 1): at most 1e14 sat per 1M tokens
UsdPrice = Annotated[Decimal, Field(ge=0, le=10**6, decimal_places=DIGITS)]


class Section(BaseModel):
    """Frozen, so settings can be shared by concurrent requests; an admin change builds new ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def private(model: BaseModel) -> dict[str, Any]:
    """A validated model's private attributes, read directly: pydantic's own lookup of a
    private attribute (through ``__getattr__``) costs microseconds, on every request."""
    found = model.__pydantic_private__
    assert found is not None
    return found
