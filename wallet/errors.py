"""Ledger failures the node maps to contract codes."""

from __future__ import annotations


class WalletError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InsufficientBalance(WalletError):
    """The account cannot cover the amount (balance − reserved is too small)."""

    def __init__(self, message: str, *, needed_msat: int = 0, available_msat: int = 0) -> None:
        super().__init__(message)
        self.needed_msat = needed_msat
        self.available_msat = available_msat


class AccountNotFound(WalletError):
    pass


class TokenAlreadyRedeemed(WalletError):
    """This node already redeemed the token (its proofs are spent here)."""

    def __init__(self, message: str, *, account_id: int | None = None) -> None:
        super().__init__(message)
        self.account_id = account_id  # the account it was credited to


class TokenBeingRedeemed(WalletError):
    """Another request is redeeming the same token right now."""


class OperationInFlight(WalletError):
    """The mint has not settled an operation yet; recovery will finish it."""


class InsufficientCustody(WalletError):
    """The node does not hold enough proofs at that mint (should not happen when balanced)."""


class InvalidAmount(WalletError):
    pass


class InvoiceRejected(WalletError):
    """The mint will not quote a payment of this invoice (malformed, expired, no amount…)."""


class PaymentFailed(WalletError):
    """The mint could not pay the invoice; the money held for it went back to the account."""


class InvoiceNotFound(WalletError):
    pass


class InvoiceSecretInvalid(WalletError):
    """The secret presented is not this invoice's."""


class KeysAlreadyDelivered(WalletError):
    """The new account's keys were handed over before; they are never shown twice."""


class PaymentInFlight(WalletError):
    """The X-Cashu payment's request has not settled yet, so its change is not known."""


class AdminKeyTaken(WalletError):
    """The admin key a client chose for its new account is another account's."""


class InsufficientEarnings(WalletError):
    """A payout asks more than the node's earnings can pay (at that mint): liabilities,
    the clients' money, are never paid out."""

    def __init__(self, message: str, *, available_msat: int = 0) -> None:
        super().__init__(message)
        self.available_msat = available_msat


class InvoiceAmountMismatch(WalletError):
    """The invoice is not for the amount that was asked for: it is not paid."""


class PayoutPending(WalletError):
    """The payout's mint has not settled it yet; it is finished automatically."""


class StoreUnavailable(WalletError):
    """The database cannot be opened or reached: a message for the operator naming it
    (at start), a 503 for a request (while serving: nothing was charged)."""


class PayoutKeyReused(WalletError):
    """An idempotency key given again with a different payout request."""


class PayoutKeyTaken(WalletError):
    """A payout with this idempotency key was written by another request meanwhile."""
