"""Sending: a token of N sat out of custody, paid from an account."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mints.client import MintClient
from mints.curve import Point
from mints.errors import ProtocolError
from mints.keysets import amount_split
from mints.models import BlindSignature
from mints.token import encode_token
from wallet import blinding
from wallet.custody.base import CUSTODY_WAITS_S, SELECTION_ATTEMPTS, CustodyBase
from wallet.errors import (
    InsufficientBalance,
    InsufficientCustody,
    InvalidAmount,
    OperationInFlight,
)
from wallet.faults import fault_point
from wallet.operations import OperationKind, OperationState, Outcome, Resolution
from wallet.selection import Coin, Selection, select_covering, select_exact
from wallet.sqlite import custody as sql
from wallet.sqlite import ledger as ledger_sql
from wallet.sqlite import outgoing as outgoing_sql

# a token travels in headers (X-Cashu change, X-Cashu payments): handed over as found in a
# custody of many small proofs it grew past what clients read (one change token of ~60
# proofs was over aiohttp's 8,190-byte header line). Past the amount's own denominations
# plus these, the proofs are swapped for the amount's denominations instead.
EXTRA_PROOFS_WITHOUT_SWAP = 4


@dataclass(frozen=True, slots=True)
class SentToken:
    token: str
    amount_sat: int
    fee_sat: int
    mint_url: str


class Sending(CustodyBase):
    """Tokens out of custody: exact proofs handed over, or a swap for the amount and change."""

    async def send(
        self,
        account_id: int,
        mint_url: str,
        amount_sat: int | None,
        *,
        purpose: str,
        legacy: bool = False,
    ) -> SentToken:
        """Make a token worth ``amount_sat`` (None: all the account can pay) and charge it.

        The account pays the token's value plus the mint's input fee for the swap.
        """
        client = self.client_for(mint_url)
        return await self._on_current_keyset(
            client, lambda: self._send(account_id, client, amount_sat, purpose, legacy)
        )

    async def _send(
        self,
        account_id: int,
        client: MintClient,
        amount_sat: int | None,
        purpose: str,
        legacy: bool,
    ) -> SentToken:
        fee_ppk = await self._fee_ppk(client)
        waits = iter(CUSTODY_WAITS_S)
        every_coin = False
        for _ in range(SELECTION_ATTEMPTS + len(CUSTODY_WAITS_S) + 1):
            try:
                # selecting proofs and locking them is one step per mint, never across a
                # mint call
                async with self._selection_lock(client.url):
                    coins, left_out, available = await self._coins_and_balance(
                        client.url, account_id, every_coin=every_coin
                    )
                    try:
                        amount, plan = _plan_send(coins, fee_ppk, amount_sat, available // 1000)
                    except InsufficientCustody:
                        if not left_out:
                            raise
                        every_coin = True  # a few of each amount were not enough: all of them
                        continue
                    if isinstance(plan, tuple):
                        sent = await self._send_exact(
                            account_id, client.url, amount, plan, purpose, legacy
                        )
                        if sent is not None:
                            return sent
                        continue
                    written = await self._write_swap(
                        account_id, client, amount, plan, purpose, legacy
                    )
            except InsufficientCustody:
                await self._wait_for_change(client.url, waits)
                continue
            except InsufficientBalance as exc:
                # "all" was planned on a balance a request has just reserved from: plan again
                if amount_sat is not None or exc.available_msat < 1000:
                    raise
                continue
            if written is not None:
                return await self._run_swap(client, *written)
        raise InsufficientCustody("custody changed under every attempt to select proofs")

    async def _send_exact(
        self,
        account_id: int,
        mint_url: str,
        amount: int,
        coins: tuple[Coin, ...],
        purpose: str,
        legacy: bool,
    ) -> SentToken | None:
        """Hand over proofs worth exactly ``amount`` without a mint call."""
        ids = [c.id for c in coins]

        def txn(c: Any) -> SentToken:
            stored = sql.proofs_by_ids(c, ids)
            token = encode_token(mint_url, [s.proof for s in stored], legacy=legacy)
            reservation = ledger_sql.reserve(c, account_id, amount * 1000, purpose)
            out_id = outgoing_sql.insert_outgoing_token(
                c, account_id, purpose, mint_url, amount, token
            )
            sql.mark_sent(c, ids, out_id)
            ledger_sql.settle(c, reservation, amount * 1000, destination="out")
            return SentToken(token, amount, 0, mint_url)

        try:
            return await self.db.write(txn)
        except sql.SelectionConflict:
            return None

    async def _write_swap(
        self,
        account_id: int,
        client: MintClient,
        amount: int,
        selection: Selection,
        purpose: str,
        legacy: bool,
    ) -> tuple[int, list[sql.StoredProof], list[sql.OutputRow]] | None:
        """Reserve, lock the inputs and write the swap down; None if the inputs were taken."""
        keyset = await client.active_keyset()
        change = selection.total - amount - selection.fee
        send_outputs = await self.prepare(keyset, amount_split(amount))
        keep_outputs = await self.prepare(keyset, amount_split(change))
        rows = [sql.OutputRow("send", o) for o in send_outputs]
        rows += [sql.OutputRow("keep", o) for o in keep_outputs]
        cost_msat = (amount + selection.fee) * 1000
        ids = [c.id for c in selection.coins]
        intent = {
            "account_id": account_id,
            "purpose": purpose,
            "amount_sat": amount,
            "fee_sat": selection.fee,
            "legacy": legacy,
        }

        return await self._write_locked(
            account_id, client, OperationKind.SWAP, purpose, cost_msat, intent, rows, ids
        )

    async def _run_swap(
        self,
        client: MintClient,
        op_id: int,
        inputs: list[sql.StoredProof],
        rows: list[sql.OutputRow],
    ) -> SentToken:
        with self._live(op_id):
            fault_point("send:written")
            answer = await self._swap_written(
                client, op_id, [s.proof for s in inputs], rows, on_refused=self.revert_send
            )
            if isinstance(answer, Resolution):
                return await self._sent_after(op_id, answer)
            signatures, terms = answer
            fault_point("send:swapped")
            return await self.complete_send(op_id, rows, signatures, terms=terms)

    async def _sent_after(self, op_id: int, resolution: Resolution) -> SentToken:
        """What a send whose answer was lost came to, for its request."""
        match resolution.outcome:
            case Outcome.DONE:
                op = await self.db.read(lambda c: sql.operation(c, op_id))
                token = await self.db.read(lambda c: sql.operation_token(c, op_id))
                intent = op.intent
                return SentToken(
                    token, int(intent["amount_sat"]), int(intent["fee_sat"]), op.mint_url
                )
            case Outcome.FAILED:
                raise resolution.refusal or ProtocolError(
                    "the node's proofs for this were spent elsewhere"
                )
            case Outcome.PENDING:
                raise OperationInFlight(
                    "the mint has not answered yet; the withdrawal finishes by itself (its"
                    " token is then listed at GET /v1/wallet/withdrawals) or is undone"
                )

    async def complete_send(
        self,
        op_id: int,
        rows: list[sql.OutputRow],
        signatures: list[BlindSignature],
        *,
        terms: list[Point | None] | None = None,
    ) -> SentToken:
        op = await self.db.read(lambda c: sql.operation(c, op_id))
        client = self.client_for(op.mint_url)
        stored = await blinding.unblind_rows(client, rows, signatures, terms=terms)
        roles = [r.role for r in rows]
        send = [s for s, role in zip(stored, roles, strict=True) if role == "send"]
        keep = [s for s, role in zip(stored, roles, strict=True) if role == "keep"]
        intent = op.intent
        amount = int(intent["amount_sat"])
        fee = int(intent["fee_sat"])
        token = encode_token(op.mint_url, [s.proof for s in send], legacy=bool(intent["legacy"]))

        def txn(c: Any) -> SentToken:
            if sql.operation_state(c, op_id) is not OperationState.PENDING:
                return SentToken(sql.operation_token(c, op_id), amount, fee, op.mint_url)
            sql.settle_inputs(c, op_id, "spent")
            sql.insert_proofs(c, op.mint_url, keep, state="unspent", operation_id=op_id)
            out_id = outgoing_sql.insert_outgoing_token(
                c, int(intent["account_id"]), str(intent["purpose"]), op.mint_url, amount, token
            )
            sql.insert_proofs(
                c, op.mint_url, send, state="sent", operation_id=op_id, outgoing_token_id=out_id
            )
            ledger_sql.settle(
                c,
                int(intent["reservation_id"]),
                (amount + fee) * 1000,
                destination="out",
                operation_id=op_id,
            )
            sql.finish_operation(
                c, op_id, OperationState.DONE, result={"outgoing_token_id": out_id}
            )
            return SentToken(token, amount, fee, op.mint_url)

        return await self.db.write(txn)


def _plan_send(
    coins: list[Coin], fee_ppk: dict[str, int], amount_sat: int | None, available_sat: int
) -> tuple[int, tuple[Coin, ...] | Selection]:
    """How to make the token: exact coins (no swap) or a covering selection to swap."""
    if amount_sat is not None and (type(amount_sat) is not int or amount_sat <= 0):
        raise InvalidAmount("amount must be a positive integer of sat")
    amount = available_sat if amount_sat is None else amount_sat
    if amount > available_sat:
        raise InsufficientBalance(
            f"the account can pay {available_sat} sat, not {amount}",
            needed_msat=amount * 1000,
            available_msat=available_sat * 1000,
        )
    if amount <= 0:
        raise InsufficientBalance("nothing to send", needed_msat=1000, available_msat=0)
    as_they_are: tuple[int, tuple[Coin, ...]] | None = None  # many proofs, but no fee
    for _ in range(4):
        exact = select_exact(coins, amount)
        if exact is not None:
            if len(exact) <= len(amount_split(amount)) + EXTRA_PROOFS_WITHOUT_SWAP:
                return amount, exact
            as_they_are = as_they_are or (amount, exact)
        selection = select_covering(coins, amount, fee_ppk)
        if selection is not None and amount + selection.fee <= available_sat:
            return amount, selection
        if selection is None or amount_sat is not None or available_sat <= selection.fee:
            break
        amount = available_sat - selection.fee  # everything: the swap's fee comes out of it
    if as_they_are is not None:
        return as_they_are
    if selection is None:
        raise InsufficientCustody("the node holds too little at this mint")
    raise InsufficientBalance(
        f"the account cannot pay {amount} sat plus the mint's fee",
        needed_msat=amount * 1000,
        available_msat=available_sat * 1000,
    )
