"""Custody: receiving tokens, sending tokens and paying invoices with the node's proofs.

Every swap and melt follows the same three steps: write it down (inputs, outputs with
their secrets, and what it is for), send it to the mint, then store the result and
its ledger effect in one transaction. A crash between any two steps leaves a pending
operation that :mod:`wallet.recovery` finishes at start with the same completion code.
"""

from __future__ import annotations

import logging

from wallet.custody.melt import Melting, MeltResult
from wallet.custody.receive import Received, Receiving
from wallet.custody.send import Sending, SentToken

__all__ = ["Custody", "MeltResult", "Received", "SentToken"]

log = logging.getLogger(__name__)


class Custody(Receiving, Sending, Melting):
    """The node's ecash at its trusted mints."""

    async def _resolve_now(self, op_id: int) -> None:
        """After an ambiguous mint failure, try once to settle the operation either way."""
        from wallet.recovery import recover_operation

        try:
            await recover_operation(self, op_id)
        except Exception as exc:  # recovery at the next start will try again
            log.warning("operation %s stays pending: %s", op_id, type(exc).__name__)
