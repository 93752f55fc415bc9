"""Typed failures of tokens and mints, so the layers above can map them to contract codes."""

from __future__ import annotations


class MintError(Exception):
    """Base of every error this layer raises."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TokenInvalid(MintError):
    """The string is not a well-formed cashuA/cashuB token, or its proofs are malformed."""


class UnitUnsupported(MintError):
    """The token is in a unit other than sat."""


class MintUntrusted(MintError):
    """The token (or request) names a mint the node does not trust."""


class AmountTooSmall(MintError):
    """The token is worth no more than the mint's input fee for it."""


class MintRefused(MintError):
    """The mint answered with an error: the operation did not happen there."""

    def __init__(self, message: str, *, code: int | None = None, detail: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.detail = detail


class ProofsSpent(MintRefused):
    """The mint says the proofs are already spent (NUT code 11001)."""


class ProofsPending(MintRefused):
    """The mint says the proofs are in a pending operation (NUT code 11002)."""


class KeysetInactive(MintRefused):
    """The mint signs no more with the outputs' keyset (NUT codes 12001/12002): it rotated
    its keys. Nothing happened there; the same operation on its new keyset goes through."""


class MintUnreachable(MintError):
    """The mint did not answer, timed out or answered with a server error."""


class MintRateLimited(MintError):
    """The mint answered 429."""


class ProtocolError(MintError):
    """The mint answered something the node cannot accept (the operation may have happened)."""
