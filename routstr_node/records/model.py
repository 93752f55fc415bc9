"""A paid request's usage record, and the questions asked of the records.

A record names the account (never a key or a token), never the prompt: what was
asked, by whom it was paid, what it cost, how it went.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class Counted:
    """What an answer was charged for: tokens, or media units (images, seconds...)."""

    input_tokens: int = 0
    output_tokens: int = 0
    units: int = 0
    unit: str | None = None  # "image", "character", "second"


@dataclass(frozen=True, slots=True)
class UsageRecord:
    request_id: str  # the answer's X-Request-Id
    created: int  # unix seconds, when the request came in
    account_id: int
    mode: str  # how it was paid: account | token | xcashu (payment.PaymentMode)
    route: str
    model: str
    provider: str | None
    status: int  # the HTTP status the client got
    latency_ms: int | None  # None: rebuilt from the ledger after a crash
    first_byte_ms: int | None
    input_tokens: int
    output_tokens: int
    units: int
    unit: str | None
    cost_msat: int
    reservation_id: int | None  # the ledger's reservation: how a lost record is found


class Grouping(StrEnum):
    DAY = "day"
    MODEL = "model"
    PROVIDER = "provider"


@dataclass(frozen=True, slots=True)
class RecordFilter:
    """Admin's question for requests: every given field must match."""

    model: str | None = None
    provider: str | None = None
    status: int | None = None
    since: int | None = None  # unix seconds, inclusive
    until: int | None = None  # unix seconds, exclusive


@dataclass(frozen=True, slots=True)
class UsageGroup:
    key: str
    requests: int
    errors: int  # answers with a status of 400 or more
    input_tokens: int
    output_tokens: int
    earnings_msat: int
    latency_ms_p50: int | None


def is_error(status: int) -> bool:
    return status >= 400
