"""The one rule for an operation whose outcome is unknown.

A swap or melt whose answer was lost (a timeout, a dropped connection, the node killed)
may still be carried out by the mint: it can sit in a queue, behind a slow Lightning
payment, or in a paused process. One reading of NUT-07 ("the inputs are unspent") says
nothing about a request still on its way, so an operation is never closed on it.
Instead the identical request is sent again: same inputs, same NUT-13 outputs, same
quote. The mint then either carries it out once, or says it did (spent inputs, outputs
signed before, a paid quote) and NUT-09 restore gives the signatures back. Only a
refusal of that identical request with the inputs still unspent proves it never
happened and never will: a copy still on its way is refused the same way.

Every path that closes an unknown operation goes through here: recovery at start, the
background round, a request whose mint call timed out, a token presented again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import assert_never

from mints.errors import MintError, MintRefused, OutputsAlreadySigned, ProofsPending, ProofsSpent
from mints.models import BlindSignature, Proof
from mints.outputs import proof_y
from wallet.custody.issue import Minting
from wallet.custody.melt import Melting
from wallet.custody.receive import Receiving
from wallet.custody.send import Sending
from wallet.operations import (
    IssueIntent,
    MeltIntent,
    Operation,
    OperationState,
    Outcome,
    OutputRow,
    ReceiveIntent,
    Resolution,
    SendIntent,
)

log = logging.getLogger(__name__)

# refusals that say the request was carried out before, or is being carried out
_HAPPENED = (ProofsSpent, OutputsAlreadySigned, ProofsPending)


class Resolving(Receiving, Sending, Melting, Minting):
    """Settling operations whose outcome is unknown, one at a time each."""

    async def resolve(self, op_id: int) -> Resolution:
        async with self._resolution_lock(op_id):
            op = await self.store.operation(op_id)
            match op.state:
                case OperationState.DONE:
                    return Resolution(Outcome.DONE)
                case OperationState.FAILED:
                    return Resolution(Outcome.FAILED)
            rows = await self.store.operation_outputs(op_id)
            try:
                match op.intent:
                    case ReceiveIntent() | SendIntent():
                        return await self._resolve_swap(op, rows)
                    case MeltIntent():
                        return await self._resolve_melt(op, rows)
                    case IssueIntent() as intent:
                        return await self._resolve_mint(op, intent, rows)
                    case _:
                        assert_never(op.intent)
            except MintError as exc:  # the mint did not say: ask again later
                log.info("operation %s stays pending: %s", op_id, exc.message)
                return Resolution(Outcome.PENDING)

    # -- swaps: a token received, a token sent ------------------------------------------

    async def _resolve_swap(self, op: Operation, rows: list[OutputRow]) -> Resolution:
        client = self.client_for(op.mint_url)
        inputs: Sequence[Proof]
        if isinstance(op.intent, ReceiveIntent):
            inputs = op.foreign_inputs
            ys = [proof_y(p.secret) for p in inputs]
        else:
            stored = await self.store.operation_inputs(op.id)
            inputs, ys = [s.proof for s in stored], [s.y for s in stored]
        try:
            signatures = await client.swap(list(inputs), [r.output.message() for r in rows])
        except MintRefused as refusal:
            return await self._after_refusal(op, rows, ys, refusal)
        await self._complete_swap(op, rows, signatures)
        return Resolution(Outcome.DONE)

    async def _after_refusal(
        self, op: Operation, rows: list[OutputRow], ys: list[str], refusal: MintRefused
    ) -> Resolution:
        """The identical swap was refused: done before, under way, or never to be."""
        client = self.client_for(op.mint_url)
        states = await client.check_state(ys)
        values = set(states.values())
        if "PENDING" in values:
            return Resolution(Outcome.PENDING)
        if values <= {"UNSPENT"}:
            if isinstance(refusal, _HAPPENED):
                log.error(
                    "operation %s: the mint says %s, yet its inputs are unspent; waiting",
                    op.id,
                    refusal.detail or refusal.message,
                )
                return Resolution(Outcome.PENDING)
            await self._close_never_happened(op, str(refusal))
            return Resolution(Outcome.FAILED, refusal)
        signed = await client.restore([r.output.message() for r in rows]) if rows else {}
        found = [(r, signed[r.output.B_]) for r in rows if r.output.B_ in signed]
        if found:
            if len(found) != len(rows):
                log.warning("operation %s: %d of %d outputs restored", op.id, len(found), len(rows))
            await self._complete_swap(op, [r for r, _ in found], [s for _, s in found])
            return Resolution(Outcome.DONE)
        # the inputs were spent by another swap, not this one
        if isinstance(op.intent, ReceiveIntent):
            await self._fail(op.id, "the token's proofs were spent elsewhere")
            return Resolution(Outcome.FAILED, ProofsSpent("the token's proofs are spent"))
        log.error("operation %s: own proofs spent elsewhere; custody is short", op.id)
        await self.store.mark_inputs_lost(op.id, "inputs spent elsewhere")
        return Resolution(Outcome.FAILED)

    async def _complete_swap(
        self, op: Operation, rows: list[OutputRow], signatures: list[BlindSignature]
    ) -> None:
        if isinstance(op.intent, ReceiveIntent):
            await self.complete_receive(op.id, rows, signatures)
        else:
            await self.complete_send(op.id, rows, signatures)

    async def _close_never_happened(self, op: Operation, error: str) -> None:
        if isinstance(op.intent, ReceiveIntent):
            await self._fail(op.id, error)
        else:
            await self.revert_send(op.id, error)

    # -- melts: closed only on the quote's final state ------------------------------------

    async def _resolve_melt(self, op: Operation, rows: list[OutputRow]) -> Resolution:
        client = self.client_for(op.mint_url)
        assert op.quote_id is not None
        quote = await client.get_melt_quote(op.quote_id)
        if quote.state == "PAID":
            return await self._melt_was_paid(op, rows, quote.payment_preimage)
        if quote.state == "PENDING":
            return Resolution(Outcome.PENDING)
        stored = await self.store.operation_inputs(op.id)
        try:
            answer = await client.melt(
                op.quote_id, [s.proof for s in stored], [r.output.message() for r in rows]
            )
        except MintRefused as refusal:
            quote = await client.get_melt_quote(op.quote_id)
            if quote.state == "PAID":
                return await self._melt_was_paid(op, rows, quote.payment_preimage)
            states = await client.check_state([s.y for s in stored])
            if quote.state == "UNPAID" and set(states.values()) <= {"UNSPENT"}:
                # the mint refused to pay this very quote with these very inputs now
                await self.revert_send(op.id, str(refusal))
                return Resolution(Outcome.FAILED, refusal)
            return Resolution(Outcome.PENDING)
        if answer.state != "PAID":
            return Resolution(Outcome.PENDING)
        await self.complete_melt(op.id, rows, list(answer.change), answer.payment_preimage)
        return Resolution(Outcome.DONE)

    async def _melt_was_paid(
        self, op: Operation, rows: list[OutputRow], preimage: str | None
    ) -> Resolution:
        client = self.client_for(op.mint_url)
        signed = await client.restore([r.output.message() for r in rows]) if rows else {}
        found = [(r, signed[r.output.B_]) for r in rows if r.output.B_ in signed]
        await self.complete_melt(op.id, [r for r, _ in found], [s for _, s in found], preimage)
        return Resolution(Outcome.DONE)
