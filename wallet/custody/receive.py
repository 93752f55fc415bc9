"""Receiving: a user's token becomes the node's proofs and an account's balance."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mints.client import MintClient
from mints.curve import Point
from mints.directory import CheckedToken
from mints.errors import MintUnreachable, ProofsSpent
from mints.keysets import amount_split
from mints.models import BlindSignature
from wallet import blinding
from wallet.custody.base import CustodyBase
from wallet.errors import OperationInFlight, TokenBeingRedeemed
from wallet.faults import fault_point
from wallet.operations import OperationKind, OperationState, Outcome, Resolution
from wallet.sqlite import custody as sql
from wallet.sqlite import ledger as ledger_sql

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
        self, checked: CheckedToken, intent: dict[str, Any], *, reserve_msat: int | None = None
    ) -> Received:
        """Swap a token's proofs for fresh ones and credit what the node received.

        ``intent`` says whose balance grows: ``{"account_id": n}`` or
        ``{"create": {"kind": …, "key_hash": …, "admin_key_hash": …, "token_id": …}}``.
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
                    client, lambda: self._receive(client, checked, intent, reserve_msat)
                )
            except TokenBeingRedeemed:
                op_id = await self.db.read(lambda c: sql.pending_receive_of_token(c, token_id))
                if op_id is None:
                    continue  # it ended meanwhile: look again
                if op_id in self.live_operations:
                    raise  # another request of this node is redeeming it right now
                resolution = await self.resolve_unless_busy(op_id)
                if resolution.outcome is Outcome.PENDING:
                    raise _unresolved() from None
        raise TokenBeingRedeemed("this token is being redeemed by another request")

    async def _receive(
        self,
        client: MintClient,
        checked: CheckedToken,
        intent: dict[str, Any],
        reserve_msat: int | None,
    ) -> Received:
        token = checked.token
        keyset = await client.active_keyset()
        outputs = await self.prepare(keyset, amount_split(checked.value_after_fee))
        rows = [sql.OutputRow("keep", o) for o in outputs]
        written = {**intent, "fee_sat": checked.fee}
        op_id = await self.db.write(
            lambda c: sql.insert_operation(
                c,
                OperationKind.RECEIVE,
                client.url,
                written,
                rows,
                token_id=token.token_id,
                foreign_inputs=token.proofs,
            )
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
            op = sql.Operation(
                op_id,
                OperationKind.RECEIVE,
                client.url,
                OperationState.PENDING,
                token.token_id,
                [],
                written,
                None,
            )
            return await self.complete_receive(
                op_id, rows, signatures, op=op, terms=terms, reserve_msat=reserve_msat
            )

    async def _received_after(self, op_id: int, resolution: Resolution, fee_sat: int) -> Received:
        """What a redeem whose answer was lost came to, for its request."""
        match resolution.outcome:
            case Outcome.DONE:
                return await self.db.read(lambda c: _received_from_result(c, op_id, fee_sat))
            case Outcome.FAILED:
                raise resolution.refusal or ProofsSpent("the token's proofs are spent elsewhere")
            case Outcome.PENDING:
                raise _unresolved()

    async def complete_receive(
        self,
        op_id: int,
        rows: list[sql.OutputRow],
        signatures: list[BlindSignature],
        *,
        op: sql.Operation | None = None,
        terms: list[Point | None] | None = None,
        reserve_msat: int | None = None,
    ) -> Received:
        """Store the new proofs and credit them, once (the state is checked in the write).

        ``op`` is what the live path wrote down and ``terms`` what it computed while the
        mint was asked, and ``reserve_msat`` what its request holds; recovery passes none
        (no request is in flight then).
        """
        if op is None:
            op = await self.db.read(lambda c: sql.operation(c, op_id))
        client = self.client_for(op.mint_url)
        stored = await blinding.unblind_rows(client, rows, signatures, terms=terms)
        credited_msat = sum(s.proof.amount for s in stored) * 1000
        fee_sat = int(op.intent.get("fee_sat", 0))

        def txn(c: Any) -> Received:
            if sql.operation_state(c, op_id) is not OperationState.PENDING:
                return _received_from_result(c, op_id, fee_sat)
            sql.insert_proofs(c, op.mint_url, stored, state="unspent", operation_id=op_id)
            account_id = _apply_receive_intent(c, op.intent, op.token_id, op.mint_url)
            if credited_msat:
                ledger_sql.credit_from_custody(c, account_id, credited_msat, operation_id=op_id)
            sql.finish_operation(
                c,
                op_id,
                OperationState.DONE,
                result={"account_id": account_id, "credited_msat": credited_msat},
            )
            reservation_id = None
            if reserve_msat is not None and 0 < reserve_msat <= credited_msat:
                reservation_id = ledger_sql.reserve(c, account_id, reserve_msat, "request")
            return Received(account_id, credited_msat, fee_sat, reservation_id)

        return await self.db.write(txn)


def _apply_receive_intent(
    c: Any, intent: dict[str, Any], token_id: str | None, mint_url: str
) -> int:
    if "account_id" in intent:
        return int(intent["account_id"])
    create = dict(intent["create"])
    if create.get("token_id") == "$token":
        create["token_id"] = token_id
    return ledger_sql.create_account(
        c,
        str(create["kind"]),
        key_hash=create.get("key_hash"),
        admin_key_hash=create.get("admin_key_hash"),
        token_id=create.get("token_id"),
        mint_url=mint_url,
    )


def _received_from_result(c: Any, op_id: int, fee_sat: int) -> Received:
    result = sql.operation_result(c, op_id)
    if "account_id" not in result:
        raise OperationInFlight("the operation finished without a credit")
    return Received(int(result["account_id"]), int(result["credited_msat"]), fee_sat)
