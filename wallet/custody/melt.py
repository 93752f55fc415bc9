"""Melting: paying a Lightning invoice from an account with the node's proofs."""

from __future__ import annotations

from dataclasses import dataclass

from mints.client import MintClient
from mints.errors import MintError, MintRefused, MintUnreachable
from mints.models import BlindSignature, MeltQuote
from wallet import blinding
from wallet.custody.base import CUSTODY_WAITS_S, SELECTION_ATTEMPTS, CustodyBase
from wallet.errors import InsufficientBalance, InsufficientCustody
from wallet.faults import fault_point
from wallet.operations import MeltIntent, Outcome, OutputRole, OutputRow, Resolution
from wallet.records import StoredProof
from wallet.selection import Selection, select_covering


@dataclass(frozen=True, slots=True)
class MeltResult:
    state: str  # PAID | PENDING
    amount_sat: int
    fee_sat: int  # actual fee: lightning routing + mint input fee
    preimage: str | None


class Melting(CustodyBase):
    """Invoices paid from custody: amount plus fee reserve held, the unused reserve back."""

    async def melt_quote(self, mint_url: str, invoice: str) -> MeltQuote:
        return await self.client_for(mint_url).melt_quote(invoice)

    async def melt(self, account_id: int, mint_url: str, quote: MeltQuote) -> MeltResult:
        """Pay a melt quote; the account pays amount + actual fee, the unused reserve returns."""
        client = self.client_for(mint_url)
        return await self._on_current_keyset(client, lambda: self._melt(account_id, client, quote))

    async def _melt(self, account_id: int, client: MintClient, quote: MeltQuote) -> MeltResult:
        fee_ppk = await self._fee_ppk(client)
        needed = quote.amount + quote.fee_reserve
        waits = iter(CUSTODY_WAITS_S)
        every_coin = False
        for _ in range(SELECTION_ATTEMPTS + len(CUSTODY_WAITS_S) + 1):
            try:
                async with self._selection_lock(client.url):
                    coins, left_out, available = await self._coins_and_balance(
                        client.url, account_id, every_coin=every_coin
                    )
                    if needed * 1000 > available:
                        raise InsufficientBalance(
                            f"paying needs {quote.amount} sat plus a fee reserve of"
                            f" {quote.fee_reserve} sat; the account can spend"
                            f" {available // 1000} sat",
                            needed_msat=needed * 1000,
                            available_msat=available,
                        )
                    selection = select_covering(coins, needed, fee_ppk)
                    if selection is None and left_out:
                        every_coin = True  # a few of each amount were not enough: all of them
                        continue
                    if selection is None:
                        raise InsufficientCustody("the node holds too little at this mint")
                    written = await self._write_melt(account_id, client, quote, selection)
            except InsufficientCustody:
                await self._wait_for_change(client.url, waits)
                continue
            if written is not None:
                return await self._run_melt(client, quote, *written)
        raise InsufficientCustody("custody changed under every attempt to select proofs")

    async def _write_melt(
        self, account_id: int, client: MintClient, quote: MeltQuote, selection: Selection
    ) -> tuple[int, list[StoredProof], list[OutputRow]] | None:
        """Hold amount + fee reserve, lock the inputs, write the melt down."""
        keyset = await client.active_keyset()
        overpaid = selection.total - quote.amount - selection.fee
        blanks = await self.prepare(keyset, [1] * max(1, overpaid.bit_length()))
        rows = [OutputRow(OutputRole.CHANGE, o) for o in blanks]
        hold_msat = (quote.amount + quote.fee_reserve + selection.fee) * 1000
        ids = [c.id for c in selection.coins]
        intent = MeltIntent(account_id, quote.amount)
        return await self._write_locked(
            intent, client, "melt", hold_msat, rows, ids, quote_id=quote.quote
        )

    async def _run_melt(
        self,
        client: MintClient,
        quote: MeltQuote,
        op_id: int,
        inputs: list[StoredProof],
        rows: list[OutputRow],
    ) -> MeltResult:
        with self._live(op_id):
            fault_point("melt:written")
            try:
                answer = await client.melt(
                    quote.quote, [s.proof for s in inputs], [r.output.message() for r in rows]
                )
            except MintRefused as exc:
                # the mint answered this very request: it did not pay, unless it left the
                # inputs held (a payment it could not finish either way)
                try:
                    states = await client.check_state([s.y for s in inputs])
                except MintError:
                    states = {}
                if states and all(v == "UNSPENT" for v in states.values()):
                    await self.revert_send(op_id, str(exc))
                    raise
            except MintUnreachable as exc:
                if not exc.request_sent:
                    await self.revert_send(op_id, str(exc))
                    raise
            except MintError:
                pass  # a malformed answer: the payment may have happened
            else:
                fault_point("melt:paid")
                if answer.state != "PAID":
                    # the payment is under way: closed only on the mint's final quote state
                    self.unresolved.add(op_id)
                    return MeltResult("PENDING", quote.amount, 0, None)
                return await self.complete_melt(
                    op_id, rows, list(answer.change), answer.payment_preimage
                )
            resolution = await self._resolve_for_request(op_id)
            return await self._melted_after(op_id, resolution, quote)

    async def _melted_after(
        self, op_id: int, resolution: Resolution, quote: MeltQuote
    ) -> MeltResult:
        """What a melt whose answer was lost came to, for its request."""
        match resolution.outcome:
            case Outcome.DONE:
                result = await self.store.operation_result(op_id)
                cost = result.cost_sat or 0
                return MeltResult("PAID", quote.amount, cost - quote.amount, None)
            case Outcome.FAILED:
                raise resolution.refusal or MintRefused("the mint could not pay the invoice")
            case Outcome.PENDING:
                return MeltResult("PENDING", quote.amount, 0, None)

    async def complete_melt(
        self,
        op_id: int,
        rows: list[OutputRow],
        change: list[BlindSignature],
        preimage: str | None,
    ) -> MeltResult:
        op = await self.store.operation(op_id)
        if not isinstance(op.intent, MeltIntent):
            raise TypeError(f"operation {op_id} is not a melt")
        client = self.client_for(op.mint_url)
        paired = list(zip(rows, change, strict=False))
        stored = await blinding.unblind_rows(
            client, [r for r, _ in paired], [s for _, s in paired], blank=True
        )
        amount = op.intent.amount_sat
        cost = await self.store.complete_melt(op, stored)
        if cost is None:  # finished before (by another path): paid, as it said then
            return MeltResult("PAID", amount, 0, preimage)
        return MeltResult("PAID", amount, cost - amount, preimage)
