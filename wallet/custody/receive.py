"""Receiving: a user's token becomes the node's proofs and an account's balance."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mints.client import MintClient
from mints.curve import Point
from mints.directory import CheckedToken
from mints.keysets import amount_split
from mints.models import BlindSignature
from wallet import blinding
from wallet.custody.base import CustodyBase
from wallet.errors import OperationInFlight
from wallet.faults import fault_point
from wallet.sqlite import custody as sql
from wallet.sqlite import ledger as ledger_sql


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
        """
        client = self.mints.client(checked.token.mint)
        return await self._on_current_keyset(
            client, lambda: self._receive(client, checked, intent, reserve_msat)
        )

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
                "receive",
                client.url,
                written,
                rows,
                token_id=token.token_id,
                foreign_inputs=token.proofs,
            )
        )
        with self._live(op_id):
            fault_point("receive:written")
            signatures, terms = await self._swap_written(
                client, op_id, list(token.proofs), rows, on_refused=self._fail
            )
            fault_point("receive:swapped")
            op = sql.Operation(
                op_id, "receive", client.url, "pending", token.token_id, [], written, None
            )
            return await self.complete_receive(
                op_id, rows, signatures, op=op, terms=terms, reserve_msat=reserve_msat
            )

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
            if sql.operation_state(c, op_id) != "pending":
                return _received_from_result(c, op_id, fee_sat)
            sql.insert_proofs(c, op.mint_url, stored, state="unspent", operation_id=op_id)
            account_id = _apply_receive_intent(c, op.intent, op.token_id, op.mint_url)
            if credited_msat:
                ledger_sql.credit_from_custody(c, account_id, credited_msat, operation_id=op_id)
            sql.finish_operation(
                c, op_id, "done", result={"account_id": account_id, "credited_msat": credited_msat}
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
