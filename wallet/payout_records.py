"""Payouts of the node's earnings and the operator's books: the records a store hands
back, and the rule that closes a payout from what custody did with its account."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class PayoutKind(StrEnum):
    TOKEN = "token"
    INVOICE = "invoice"
    LIGHTNING_ADDRESS = "lightning_address"


class PayoutState(StrEnum):
    PENDING = "pending"
    PAID = "paid"
    FAILED = "failed"


PAYOUT_PURPOSE = "payout"  # the reservation and outgoing token of a payout's send


@dataclass(frozen=True, slots=True)
class PayoutRow:
    id: int
    kind: PayoutKind
    idempotency_key: str | None
    account_id: int
    mint_url: str
    held_msat: int
    asked_sat: int | None
    destination: str | None
    state: PayoutState
    amount_sat: int | None
    fee_sat: int | None
    token: str | None
    error_code: str | None
    error: str | None
    created_at: int
    finished_at: int | None


@dataclass(frozen=True, slots=True)
class PayoutOutcome:
    """What custody did with a payout's account: still busy, or how much left custody
    (``spent_msat``, value and fees) and the token it made, if any."""

    busy: bool
    spent_msat: int
    token: tuple[str, int] | None


@dataclass(frozen=True, slots=True)
class MintBooks:
    """One mint's part of the books, in msat.

    ``liabilities_msat``: what the accounts that paid with this mint (balances, reserved,
    unclaimed change) are owed; an account without a mint counts at the primary.
    ``earnings_msat``: custody here less those liabilities less payouts under way here:
    the node's own part of this mint's ecash. It can be below zero at one mint and above
    at another when clients were paid out elsewhere than where they paid; over all mints
    it sums to the earnings when the books balance.
    ``withdrawable_msat``: whole sat of that part held unspent now, at most the earnings.
    """

    url: str
    custody_msat: int
    unspent_msat: int
    liabilities_msat: int
    in_payout_msat: int
    earnings_msat: int
    withdrawable_msat: int


@dataclass(frozen=True, slots=True)
class Books:
    mints: list[MintBooks]
    earnings_msat: int  # the ledger's earnings

    @property
    def withdrawable_msat(self) -> int:
        total = sum(m.withdrawable_msat for m in self.mints)
        return min(total, self.earnings_msat // 1000 * 1000)

    def at(self, mint_url: str) -> MintBooks | None:
        return next((m for m in self.mints if m.url == mint_url), None)


@dataclass(frozen=True, slots=True)
class PayoutClosing:
    """How a pending payout closes: its state and what it paid."""

    state: PayoutState
    amount_sat: int | None = None
    fee_sat: int | None = None
    token: str | None = None
    error_code: str | None = None
    error: str | None = None


def payout_closing(
    current: PayoutRow, found: PayoutOutcome, error: tuple[str, str] | None
) -> PayoutClosing | None:
    """The closing of a pending payout from what custody did with its account; None while
    custody is still busy with it."""
    if found.busy:
        return None
    if found.token is not None:
        token, amount = found.token
        fee = found.spent_msat // 1000 - amount
        return PayoutClosing(PayoutState.PAID, amount_sat=amount, fee_sat=fee, token=token)
    if found.spent_msat and current.kind is not PayoutKind.TOKEN:
        amount = current.asked_sat or 0
        fee = found.spent_msat // 1000 - amount
        return PayoutClosing(PayoutState.PAID, amount_sat=amount, fee_sat=fee)
    code, message = error or ("payment_failed", "the payout did not go through")
    return PayoutClosing(PayoutState.FAILED, error_code=code, error=message)
