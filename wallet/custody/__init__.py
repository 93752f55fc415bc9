"""Custody: receiving tokens, sending tokens, paying invoices and minting paid quotes.

Every swap, melt and mint follows the same three steps: write it down (inputs, outputs
with their secrets, and what it is for), send it to the mint, then store the result and
its ledger effect in one transaction. A crash or a lost answer between any two steps
leaves a pending operation, settled by the one rule of :mod:`wallet.custody.resolve`
with the same completion code.
"""

from __future__ import annotations

from wallet.custody.melt import MeltResult
from wallet.custody.receive import Received
from wallet.custody.resolve import Resolving
from wallet.custody.send import SentToken

__all__ = ["Custody", "MeltResult", "Received", "SentToken"]


class Custody(Resolving):
    """The node's ecash at its trusted mints."""
