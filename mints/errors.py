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


class OutputsAlreadySigned(MintRefused):
    """The mint signed these outputs before (NUT code 11003): an earlier copy of the same
    swap or melt went through, and NUT-09 restore gives its signatures back."""


class KeysetInactive(MintRefused):
    """The mint signs no more with the outputs' keyset (NUT codes 12001/12002): it rotated
    its keys. Nothing happened there; the same operation on its new keyset goes through."""


class MintUnreachable(MintError):
    """The mint did not answer, timed out or answered with a server error.

    ``request_sent`` is False only when the connection could not even be opened (refused,
    no route, connect timeout): then the mint never saw the request, which proves that
    nothing happened there. Any later failure (a timeout while waiting, a lost answer, a
    5xx) leaves the outcome unknown.
    """

    def __init__(self, message: str, *, request_sent: bool = True) -> None:
        super().__init__(message)
        self.request_sent = request_sent


class MintRateLimited(MintError):
    """The mint answered 429."""


class ProtocolError(MintError):
    """The mint answered something the node cannot accept (the operation may have happened)."""
