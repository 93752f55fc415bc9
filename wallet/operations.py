"""What a custody operation is and how it can end: the names the write-ahead log uses."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from mints.errors import MintRefused


class OperationKind(StrEnum):
    """A write-ahead operation with a mint: each is recovered by a rule of its own."""

    RECEIVE = "receive"  # a client's token swapped for the node's proofs (NUT-03)
    SWAP = "swap"  # the node's proofs swapped for a token and change (NUT-03)
    MELT = "melt"  # the node's proofs pay an invoice (NUT-05)
    MINT = "mint"  # a paid quote minted into the node's proofs (NUT-04)


class OperationState(StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


class Outcome(StrEnum):
    """What resolving an operation found: it happened (and is stored now), it never will
    (and its holds are released), or the mint has not said yet."""

    DONE = "done"
    FAILED = "failed"
    PENDING = "pending"


@dataclass(frozen=True, slots=True)
class Resolution:
    """An operation's outcome, with the mint's refusal when that is what ended it (the
    live request passes it on to its client)."""

    outcome: Outcome
    refusal: MintRefused | None = None
