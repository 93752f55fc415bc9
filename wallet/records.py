"""What the wallet's store hands back: rows as typed records, whatever the database."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mints.models import Proof

PasswordOrigin = Literal["generated", "admin"]

PUBLIC_INVOICE_STATES = {
    "unpaid": "unpaid",
    "minting": "processing",
    "paid": "paid",
    "expired": "expired",
    "failed": "failed",
}


@dataclass(frozen=True, slots=True)
class AccountRow:
    id: int
    kind: str
    balance_msat: int
    reserved_msat: int
    mint_url: str | None
    token_id: str | None


@dataclass(frozen=True, slots=True)
class Settlement:
    reservation_id: int
    account_id: int
    reserved_msat: int
    charged_msat: int
    state: str


@dataclass(frozen=True, slots=True)
class RequestTag:
    """What a request reservation's charge names: the request, for its usage record."""

    request_id: str
    route: str
    model: str
    provider: str | None


@dataclass(frozen=True, slots=True)
class ChargedRequest:
    """A charged request as the ledger knows it (a usage record is rebuilt from it)."""

    reservation_id: int
    tag: RequestTag
    account_id: int
    account_kind: str
    charged_msat: int
    settled_at: int


@dataclass(frozen=True, slots=True)
class StoredProof:
    proof: Proof
    y: str


@dataclass(frozen=True, slots=True)
class Credit:
    """What a completed receive credited, with the reservation taken from it if asked."""

    account_id: int
    credited_msat: int
    reservation_id: int | None = None


@dataclass(frozen=True, slots=True)
class InvoiceRecord:
    id: str
    mint_url: str
    bolt11: str
    amount_sat: int
    state: str  # unpaid | minting | paid | expired | failed
    account_id: int | None  # the account to top up; None: a new account
    credited_account_id: int | None
    credited_msat: int | None
    keys_delivered: bool
    expires_at: int | None
    created_at: int
    paid_at: int | None

    @property
    def mode(self) -> str:
        return "create" if self.account_id is None else "topup"

    @property
    def public_state(self) -> str:
        return PUBLIC_INVOICE_STATES[self.state]


@dataclass(frozen=True, slots=True)
class NewInvoiceRow:
    """An invoice as first written: the mint's quote and who it is for."""

    id: str
    secret_hash: str
    mint_url: str
    quote_id: str
    bolt11: str
    amount_sat: int
    account_id: int | None
    expires_at: int | None


@dataclass(frozen=True, slots=True)
class Withdrawal:
    token: str
    amount_sat: int
    mint_url: str
    created_at: int


WITHDRAWN = ("withdraw", "refund")  # what an account holder took out as tokens


@dataclass(frozen=True, slots=True)
class RefundRow:
    token: str
    amount_sat: int
    mint_url: str
    ys: list[str]  # the token's proofs, to ask the mint whether they are still unspent


@dataclass(frozen=True, slots=True)
class StoredSettings:
    overrides: str  # a JSON object; "{}" when nothing was changed
    admin_password_hash: str | None
    admin_password_origin: PasswordOrigin | None


NO_SETTINGS = StoredSettings("{}", None, None)


@dataclass
class LedgerSnapshot:
    """The stored side of the audit, read in one snapshot."""

    unspent: dict[str, list[tuple[str, int]]]  # mint → [(Y, sat)]
    in_flight_sat: int
    balances: int
    reserved: int
    unclaimed_change: int
    earnings: int
    journal: tuple[int, int, int, int]
    pending_operations: int
