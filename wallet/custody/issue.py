"""Issuing: a paid NUT-04 mint quote becomes the node's proofs and an account's balance.

The invoice bookkeeping (asking for a quote, watching it, handing out keys) is
:mod:`wallet.lightning_in`; here is the operation with the mint, written down before it
is sent like every swap and melt, and resolved by the same rule when its answer is lost.
"""

from __future__ import annotations

import logging

from mints.errors import KeysetInactive, MintError, MintRefused, MintUnreachable
from mints.keysets import amount_split
from mints.models import BlindSignature
from wallet import blinding
from wallet.custody.base import CustodyBase
from wallet.faults import fault_point
from wallet.operations import (
    InvoiceState,
    IssueIntent,
    Operation,
    Outcome,
    OutputRole,
    OutputRow,
    Resolution,
)

log = logging.getLogger(__name__)

# the invoice states a paid quote may still be minted from
OPEN_INVOICE_STATES = (InvoiceState.UNPAID.value, InvoiceState.EXPIRED.value)


class Minting(CustodyBase):
    """Paid quotes into custody: minted on outputs written down first, credited once."""

    async def issue(
        self,
        invoice_id: str,
        mint_url: str,
        quote_id: str,
        amount_sat: int,
        account_id: int | None,
    ) -> None:
        """Mint an invoice's paid quote for ``account_id`` (None: a new account without
        keys); a no-op when another call is minting it already."""
        client = self.client_for(mint_url)
        keyset = await client.active_keyset()
        outputs = await self.prepare(keyset, amount_split(amount_sat))
        rows = [OutputRow(OutputRole.KEEP, o) for o in outputs]
        intent = IssueIntent(invoice_id, amount_sat, account_id)
        op_id = await self.store.write_issue(intent, client.url, rows, quote_id)
        if op_id is None:
            return
        fault_point("mint:written")
        try:
            signatures = await client.mint(quote_id, [o.message() for o in outputs])
        except MintUnreachable as exc:
            if not exc.request_sent:  # never reached the mint: minted afresh next time
                await self.store.fail_issue(op_id, invoice_id, "unpaid", str(exc))
                return
            log.info("invoice %s: %s; resolving", invoice_id, exc.message)
            await self._resolve_for_request(op_id)
            return
        except MintError as exc:
            log.info("invoice %s: mint answered %s; resolving", invoice_id, type(exc).__name__)
            await self._resolve_for_request(op_id)
            return
        fault_point("mint:minted")
        if len(signatures) != len(rows):
            await self._resolve_for_request(op_id)
            return
        await self.complete_mint(op_id, rows, signatures)

    async def complete_mint(
        self, op_id: int, rows: list[OutputRow], signatures: list[BlindSignature]
    ) -> None:
        """Store the minted proofs, credit the account (a new one if asked) and close the
        invoice. One transaction; a second call for the same operation changes nothing."""
        op = await self.store.operation(op_id)
        client = self.client_for(op.mint_url)
        stored = await blinding.unblind_rows(client, rows, signatures)
        credited_msat = sum(s.proof.amount for s in stored) * 1000
        await self.store.complete_issue(op, stored, credited_msat)

    async def _resolve_mint(
        self, op: Operation, intent: IssueIntent, rows: list[OutputRow]
    ) -> Resolution:
        """A mint whose answer was lost: the same outputs sent again while the quote is
        PAID (the mint signs them once), NUT-09 restore once it is ISSUED. Closed only on
        what the mint says of the quote, never on a guess."""
        assert op.quote_id is not None
        client = self.client_for(op.mint_url)
        messages = [r.output.message() for r in rows]
        quote = await client.get_mint_quote(op.quote_id)
        if quote.state == "PAID":
            try:
                signatures = await client.mint(op.quote_id, messages)
            except KeysetInactive as exc:
                # nothing was signed; when the mint now names another keyset active (it
                # rotated its keys), these outputs are never signed, nor would a copy of
                # this request still on its way be: the invoice goes back to be minted
                # afresh on the new keyset. Else the mint contradicts itself: later.
                active = await client.active_keyset()
                if not rows or active.id == rows[0].output.keyset_id:
                    return Resolution(Outcome.PENDING)
                await self.store.fail_issue(
                    op.id, intent.invoice_id, "unpaid", "the keyset rotated"
                )
                return Resolution(Outcome.FAILED, exc)
            except MintRefused:
                # signed meanwhile (a lost answer racing this one): the restore finds it
                quote = await client.get_mint_quote(op.quote_id)
            else:
                if len(signatures) == len(rows):
                    await self.complete_mint(op.id, rows, signatures)
                    return Resolution(Outcome.DONE)
                quote = await client.get_mint_quote(op.quote_id)
        if quote.state == "ISSUED":
            signed = await client.restore(messages) if messages else {}
            found = [(r, signed[r.output.B_]) for r in rows if r.output.B_ in signed]
            if found:
                await self.complete_mint(op.id, [r for r, _ in found], [s for _, s in found])
                return Resolution(Outcome.DONE)
            log.error("mint operation %s: the quote was issued to other outputs", op.id)
            await self.store.fail_issue(op.id, intent.invoice_id, "failed", "issued elsewhere")
            return Resolution(Outcome.FAILED)
        # PAID (refused just now), PENDING, or UNPAID, which a quote seen paid should not
        # read again: whatever it is, a copy of the request may still be signed
        if quote.state == "UNPAID":
            log.warning("mint operation %s: its quote reads UNPAID again; waiting", op.id)
        return Resolution(Outcome.PENDING)
