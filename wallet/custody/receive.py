"""Receiving: a user's token becomes the node's proofs and an account's balance."""

from __future__ import annotations

from dataclasses import dataclass

from mints.client import MintClient
from mints.curve import Point
from mints.directory import CheckedToken
from mints.errors import MintUnreachable, ProofsSpent
from mints.keysets import amount_split
from mints.models import BlindSignature
from wallet import blinding
from wallet.custody.base import CustodyBase
from wallet.errors import TokenBeingRedeemed
from wallet.faults import fault_point
from wallet.operations import (
    NewAccount,
    Operation,
    OperationState,
    Outcome,
    OutputRole,
    OutputRow,
    ReceiveIntent,
    Resolution,
)
from wallet.records import Credit

# a token presented again while its redeem is unresolved: resolved, then redeemed afresh
# if it never happened (a few rounds: another request may take it in between)
_RESOLVE_ATTEMPTS = 3


def _unresolved() -> MintUnreachable:
    return MintUnreachable(
        "the mint has not answered whether it took the token; nothing is lost: the same"
        " token finishes its redeem (or is redeemed afresh) when presented again"
    )


@dataclass(frozen=True, slots=True)
class Received:
    account_id: int
    credited_msat: int
    fee_sat: int
    reservation_id: int | None = None  # held with the credit, when asked and affordable


class Receiving(CustodyBase):
    """Tokens into custody: swapped for fresh proofs, then credited, once."""

    async def receive(
        self,
        checked: CheckedToken,
        credit_to: int | NewAccount,
        *,
        reserve_msat: int | None = None,
    ) -> Received:
        """Swap a token's proofs for fresh ones and credit what the node received.

        ``credit_to`` says whose balance grows: an account's id, or an account opened
        with the credit.
        With ``reserve_msat`` the credit comes with a reservation of that much, in the same
        transaction, when the credit covers it: no moment in between shows the balance free.

        A token whose earlier redeem is still unresolved (its answer lost, the node
        restarted) gets that redeem resolved now, when no request here is working on it:
        its credit, if it happened, raises :class:`TokenAlreadyRedeemed` as for any token
        redeemed before, and a redeem that never happened makes way for this one.
        """
        client = self.mints.client(checked.token.mint)
        token_id = checked.token.token_id
        for _ in range(_RESOLVE_ATTEMPTS):
            try:
                return await self._on_current_keyset(
                    client, lambda: self._receive(client, checked, credit_to, reserve_msat)
                )
            except TokenBeingRedeemed:
                op_id = await self.store.pending_receive_of_token(token_id)
                if op_id is None:
                    continue  # it ended meanwhile: look again
                if self.is_live(op_id, token_id):
                    raise  # another request of this node is redeeming it right now
                resolution = await self.resolve_unless_busy(op_id)
                if resolution.outcome is Outcome.PENDING:
                    raise _unresolved() from None
        raise TokenBeingRedeemed("this token is being redeemed by another request")

    async def _receive(
        self,
        client: MintClient,
        checked: CheckedToken,
        credit_to: int | NewAccount,
        reserve_msat: int | None,
    ) -> Received:
        token = checked.token
        keyset = await client.active_keyset()
        outputs = await self.prepare(keyset, amount_split(checked.value_after_fee))
        rows = [OutputRow(OutputRole.KEEP, o) for o in outputs]
        intent = (
            ReceiveIntent(credit_to, None, checked.fee)
            if isinstance(credit_to, int)
            else ReceiveIntent(None, credit_to, checked.fee)
        )
        with self._receiving_token(token.token_id):
            with self._marking_live() as mark:
                op_id = await self.store.write_receive(
                    intent, client.url, rows, token.token_id, token.proofs, mark
                )
            with self._live(op_id):
                fault_point("receive:written")
                answer = await self._swap_written(
                    client, op_id, list(token.proofs), rows, on_refused=self._fail
                )
                if isinstance(answer, Resolution):
                    return await self._received_after(op_id, answer, checked.fee)
                signatures, terms = answer
                fault_point("receive:swapped")
                op = Operation(
                    op_id, client.url, OperationState.PENDING, intent, token.token_id, [], None
                )
                return await self.complete_receive(
                    op_id, rows, signatures, op=op, terms=terms, reserve_msat=reserve_msat
                )

    async def _received_after(self, op_id: int, resolution: Resolution, fee_sat: int) -> Received:
        """What a redeem whose answer was lost came to, for its request."""
        match resolution.outcome:
            case Outcome.DONE:
                return _received(await self.store.received_credit(op_id), fee_sat)
            case Outcome.FAILED:
                raise resolution.refusal or ProofsSpent("the token's proofs are spent elsewhere")
            case Outcome.PENDING:
                raise _unresolved()

    async def complete_receive(
        self,
        op_id: int,
        rows: list[OutputRow],
        signatures: list[BlindSignature],
        *,
        op: Operation | None = None,
        terms: list[Point | None] | None = None,
        reserve_msat: int | None = None,
    ) -> Received:
        """Store the new proofs and credit them, once (the state is checked in the write).

        ``op`` is what the live path wrote down and ``terms`` what it computed while the
        mint was asked, and ``reserve_msat`` what its request holds; recovery passes none
        (no request is in flight then).
        """
        if op is None:
            op = await self.store.operation(op_id)
        if not isinstance(op.intent, ReceiveIntent):
            raise TypeError(f"operation {op_id} is not a receive")
        client = self.client_for(op.mint_url)
        stored = await blinding.unblind_rows(client, rows, signatures, terms=terms)
        credited_msat = sum(s.proof.amount for s in stored) * 1000
        credit = await self.store.complete_receive(op, stored, credited_msat, reserve_msat)
        return _received(credit, op.intent.fee_sat)


def _received(credit: Credit, fee_sat: int) -> Received:
    return Received(credit.account_id, credit.credited_msat, fee_sat, credit.reservation_id)
