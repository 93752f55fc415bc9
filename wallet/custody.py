"""Custody: receiving tokens, sending tokens and paying invoices with the node's proofs.

Every swap and melt follows the same three steps: write it down (inputs, outputs with
their secrets, and what it is for), send it to the mint, then store the result and
its ledger effect in one transaction. A crash between any two steps leaves a pending
operation that :mod:`wallet.recovery` finishes at start with the same completion code.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from mints.client import MintClient
from mints.curve import Point
from mints.directory import CheckedToken, MintDirectory
from mints.errors import MintRefused
from mints.keysets import amount_split
from mints.models import BlindSignature, Keyset, MeltQuote, Proof
from mints.outputs import PreparedOutput
from mints.token import encode_token
from wallet import blinding
from wallet.errors import InsufficientBalance, InsufficientCustody, InvalidAmount, OperationInFlight
from wallet.faults import fault_point
from wallet.output_pool import OutputPool
from wallet.selection import Coin, Selection, select_covering, select_exact
from wallet.sqlite import custody as sql
from wallet.sqlite import ledger as ledger_sql
from wallet.sqlite.database import Database

log = logging.getLogger(__name__)

_SELECTION_ATTEMPTS = 5
_CUSTODY_WAITS_S = (0.02, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.5)


@dataclass(frozen=True, slots=True)
class Received:
    account_id: int
    credited_msat: int
    fee_sat: int


@dataclass(frozen=True, slots=True)
class SentToken:
    token: str
    amount_sat: int
    fee_sat: int
    mint_url: str


@dataclass(frozen=True, slots=True)
class MeltResult:
    state: str  # PAID | PENDING
    amount_sat: int
    fee_sat: int  # actual fee: lightning routing + mint input fee
    preimage: str | None


class Custody:
    """The node's ecash at its trusted mints."""

    def __init__(self, db: Database, mints: MintDirectory, seed: bytes) -> None:
        self.db = db
        self.mints = mints
        self.outputs = OutputPool(db, seed)
        self._selection_locks: dict[str, asyncio.Lock] = {}

    def client_for(self, mint_url: str) -> MintClient:
        """The mint's client; also for a mint no longer trusted that still owes an operation."""
        if self.mints.is_trusted(mint_url):
            return self.mints.client(mint_url)
        return self.mints.extra_client(mint_url)

    async def prepare(self, keyset: Keyset, amounts: list[int]) -> list[PreparedOutput]:
        if not amounts:
            return []
        return await self.outputs.take(keyset.id, amounts)

    # -- receive: a user's token becomes the node's proofs and an account's balance --------

    async def receive(self, checked: CheckedToken, intent: dict[str, Any]) -> Received:
        """Swap a token's proofs for fresh ones and credit what the node received.

        ``intent`` says whose balance grows: ``{"account_id": n}`` or
        ``{"create": {"kind": …, "key_hash": …, "admin_key_hash": …, "token_id": …}}``.
        """
        token = checked.token
        client = self.mints.client(token.mint)
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
        fault_point("receive:written")
        signatures, terms = await self._swap_written(
            client, op_id, list(token.proofs), rows, on_refused=self._fail
        )
        fault_point("receive:swapped")
        op = sql.Operation(
            op_id, "receive", client.url, "pending", token.token_id, [], written, None
        )
        return await self.complete_receive(op_id, rows, signatures, op=op, terms=terms)

    async def complete_receive(
        self,
        op_id: int,
        rows: list[sql.OutputRow],
        signatures: list[BlindSignature],
        *,
        op: sql.Operation | None = None,
        terms: list[Point | None] | None = None,
    ) -> Received:
        """Store the new proofs and credit them, once (the state is checked in the write).

        ``op`` is what the live path wrote down and ``terms`` what it computed while the
        mint was asked; recovery passes neither.
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
            return Received(account_id, credited_msat, fee_sat)

        return await self.db.write(txn)

    # -- send: a token of N sat out of custody, paid from an account ------------------

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
        client = self.mints.client(mint_url)
        keysets = await client.keysets()
        fee_ppk = {k.id: k.input_fee_ppk for k in keysets.values()}
        waits = iter(_CUSTODY_WAITS_S)
        for _ in range(_SELECTION_ATTEMPTS + len(_CUSTODY_WAITS_S)):
            try:
                # selecting proofs and locking them is one step per mint, never across a
                # mint call
                async with self._selection_lock(client.url):
                    coins, available = await self.db.read(
                        lambda c: (
                            sql.unspent_coins(c, client.url),
                            ledger_sql.get_account(c, account_id).balance_msat,
                        )
                    )
                    amount, plan = _plan_send(coins, fee_ppk, amount_sat, available // 1000)
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

    async def _wait_for_change(self, mint_url: str, waits: Iterator[float]) -> None:
        """Custody is short at a mint while other operations there are in flight: their
        change comes back within milliseconds, so wait a moment; otherwise it is short."""
        delay = next(waits, None)
        pending = await self.db.read(lambda c: sql.has_pending_proofs(c, mint_url))
        if delay is None or not pending:
            raise InsufficientCustody(f"the node holds too little at {mint_url} for this")
        await asyncio.sleep(delay)

    def _selection_lock(self, mint_url: str) -> asyncio.Lock:
        return self._selection_locks.setdefault(mint_url, asyncio.Lock())

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
            out_id = sql.insert_outgoing_token(c, account_id, purpose, mint_url, amount, token)
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
            account_id, client, "swap", purpose, cost_msat, intent, rows, ids
        )

    async def _write_locked(
        self,
        account_id: int,
        client: MintClient,
        kind: str,
        purpose: str,
        hold_msat: int,
        intent: dict[str, Any],
        rows: list[sql.OutputRow],
        proof_ids: list[int],
        *,
        quote_id: str | None = None,
    ) -> tuple[int, list[sql.StoredProof], list[sql.OutputRow]] | None:
        """One transaction: hold the account's money, write the operation down, lock its
        inputs. None when another operation took one of the inputs first."""

        def txn(c: Any) -> tuple[int, list[sql.StoredProof]]:
            reservation = ledger_sql.reserve(c, account_id, hold_msat, purpose)
            op_id = sql.insert_operation(
                c,
                kind,
                client.url,
                {**intent, "reservation_id": reservation},
                rows,
                quote_id=quote_id,
            )
            sql.lock_proofs(c, proof_ids, op_id)
            return op_id, sql.operation_inputs(c, op_id)

        try:
            op_id, inputs = await self.db.write(txn)
        except sql.SelectionConflict:
            return None
        return op_id, inputs, rows

    async def _run_swap(
        self,
        client: MintClient,
        op_id: int,
        inputs: list[sql.StoredProof],
        rows: list[sql.OutputRow],
    ) -> SentToken:
        fault_point("send:written")
        signatures, terms = await self._swap_written(
            client, op_id, [s.proof for s in inputs], rows, on_refused=self.revert_send
        )
        fault_point("send:swapped")
        return await self.complete_send(op_id, rows, signatures, terms=terms)

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
            if sql.operation_state(c, op_id) != "pending":
                return SentToken(sql.operation_token(c, op_id), amount, fee, op.mint_url)
            sql.settle_inputs(c, op_id, "spent")
            sql.insert_proofs(c, op.mint_url, keep, state="unspent", operation_id=op_id)
            out_id = sql.insert_outgoing_token(
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
            sql.finish_operation(c, op_id, "done", result={"outgoing_token_id": out_id})
            return SentToken(token, amount, fee, op.mint_url)

        return await self.db.write(txn)

    async def revert_send(self, op_id: int, error: str) -> None:
        """The swap or melt never happened: inputs back to custody, reservation released."""

        def txn(c: Any) -> None:
            op = sql.operation(c, op_id)
            if op.state != "pending":
                return
            sql.settle_inputs(c, op_id, "unspent")
            if "reservation_id" in op.intent:
                ledger_sql.settle(c, int(op.intent["reservation_id"]), 0, operation_id=op_id)
            sql.finish_operation(c, op_id, "failed", error=error[:500])

        await self.db.write(txn)

    # -- melt: pay a Lightning invoice from an account --------------------------------

    async def melt_quote(self, mint_url: str, invoice: str) -> MeltQuote:
        return await self.mints.client(mint_url).melt_quote(invoice)

    async def melt(self, account_id: int, mint_url: str, quote: MeltQuote) -> MeltResult:
        """Pay a melt quote; the account pays amount + actual fee, the unused reserve returns."""
        client = self.mints.client(mint_url)
        keysets = await client.keysets()
        fee_ppk = {k.id: k.input_fee_ppk for k in keysets.values()}
        needed = quote.amount + quote.fee_reserve
        waits = iter(_CUSTODY_WAITS_S)
        for _ in range(_SELECTION_ATTEMPTS + len(_CUSTODY_WAITS_S)):
            try:
                async with self._selection_lock(client.url):
                    coins, available = await self.db.read(
                        lambda c: (
                            sql.unspent_coins(c, client.url),
                            ledger_sql.get_account(c, account_id).balance_msat,
                        )
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
    ) -> tuple[int, list[sql.StoredProof], list[sql.OutputRow]] | None:
        """Hold amount + fee reserve, lock the inputs, write the melt down."""
        keyset = await client.active_keyset()
        overpaid = selection.total - quote.amount - selection.fee
        blanks = await self.prepare(keyset, [1] * max(1, overpaid.bit_length()))
        rows = [sql.OutputRow("change", o) for o in blanks]
        hold_msat = (quote.amount + quote.fee_reserve + selection.fee) * 1000
        ids = [c.id for c in selection.coins]
        intent = {"account_id": account_id, "amount_sat": quote.amount}

        return await self._write_locked(
            account_id,
            client,
            "melt",
            "melt",
            hold_msat,
            intent,
            rows,
            ids,
            quote_id=quote.quote,
        )

    async def _run_melt(
        self,
        client: MintClient,
        quote: MeltQuote,
        op_id: int,
        inputs: list[sql.StoredProof],
        rows: list[sql.OutputRow],
    ) -> MeltResult:
        fault_point("melt:written")
        try:
            answer = await client.melt(
                quote.quote, [s.proof for s in inputs], [r.output.message() for r in rows]
            )
        except MintRefused as exc:
            states = await client.check_state([s.y for s in inputs])
            if all(v == "UNSPENT" for v in states.values()):
                await self.revert_send(op_id, str(exc))
                raise
            raise OperationInFlight("the payment is pending at the mint") from exc
        except Exception:
            await self._resolve_now(op_id)
            raise
        fault_point("melt:paid")
        if answer.state != "PAID":
            return await self._melt_not_paid(op_id, client, inputs, quote)
        return await self.complete_melt(op_id, rows, list(answer.change), answer.payment_preimage)

    async def _melt_not_paid(
        self, op_id: int, client: MintClient, inputs: list[sql.StoredProof], quote: MeltQuote
    ) -> MeltResult:
        states = await client.check_state([s.y for s in inputs])
        if all(v == "UNSPENT" for v in states.values()):
            await self.revert_send(op_id, "the invoice was not paid")
            raise MintRefused("the mint could not pay the invoice")
        return MeltResult("PENDING", quote.amount, 0, None)

    async def complete_melt(
        self,
        op_id: int,
        rows: list[sql.OutputRow],
        change: list[BlindSignature],
        preimage: str | None,
    ) -> MeltResult:
        op = await self.db.read(lambda c: sql.operation(c, op_id))
        client = self.client_for(op.mint_url)
        paired = list(zip(rows, change, strict=False))
        stored = await blinding.unblind_rows(
            client, [r for r, _ in paired], [s for _, s in paired], blank=True
        )
        change_sat = sum(s.proof.amount for s in stored)
        amount = int(op.intent["amount_sat"])

        def txn(c: Any) -> MeltResult:
            inputs = sql.operation_inputs(c, op_id)
            spent = sum(s.proof.amount for s in inputs)
            if sql.operation_state(c, op_id) != "pending":
                return MeltResult("PAID", amount, 0, preimage)
            sql.settle_inputs(c, op_id, "spent")
            sql.insert_proofs(c, op.mint_url, stored, state="unspent", operation_id=op_id)
            cost = spent - change_sat
            ledger_sql.settle(
                c,
                int(op.intent["reservation_id"]),
                cost * 1000,
                destination="out",
                operation_id=op_id,
            )
            sql.finish_operation(c, op_id, "done", result={"cost_sat": cost})
            return MeltResult("PAID", amount, cost - amount, preimage)

        return await self.db.write(txn)

    # -- shared pieces ----------------------------------------------------------------

    async def _swap_written(
        self,
        client: MintClient,
        op_id: int,
        inputs: list[Proof],
        rows: list[sql.OutputRow],
        *,
        on_refused: Callable[[int, str], Awaitable[None]],
    ) -> tuple[list[BlindSignature], list[Point | None]]:
        """Send a written-down swap: a refusal proves it did not happen, anything else
        (a lost answer, a timeout) is resolved against the mint now or at the next start.

        While the mint works, the node does what needs no answer: the outputs' unblinding
        terms, and the next operations' outputs.
        """
        swap = asyncio.ensure_future(client.swap(inputs, [r.output.message() for r in rows]))
        try:
            terms = await blinding.unblinding_terms(client, rows, until=swap)
            if rows:
                await self.outputs.derive_ahead(rows[0].output.keyset_id, until=swap)
        except asyncio.CancelledError:  # while the mint works: as if its call was cancelled
            swap.cancel()
            raise
        try:
            return await swap, terms
        except MintRefused as exc:
            await on_refused(op_id, str(exc))
            raise
        except Exception:
            await self._resolve_now(op_id)
            raise

    async def _fail(self, op_id: int, error: str) -> None:
        await self.db.write(lambda c: sql.finish_operation(c, op_id, "failed", error=error[:500]))

    async def _resolve_now(self, op_id: int) -> None:
        """After an ambiguous mint failure, try once to settle the operation either way."""
        from wallet.recovery import recover_operation

        try:
            await recover_operation(self, op_id)
        except Exception as exc:  # recovery at the next start will try again
            log.warning("operation %s stays pending: %s", op_id, type(exc).__name__)


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
    for _ in range(4):
        exact = select_exact(coins, amount)
        if exact is not None:
            if amount > available_sat:
                break
            return amount, exact
        selection = select_covering(coins, amount, fee_ppk)
        if selection is None:
            raise InsufficientCustody("the node holds too little at this mint")
        if amount + selection.fee <= available_sat:
            return amount, selection
        if amount_sat is not None:
            break
        amount = available_sat - selection.fee
        if amount <= 0:
            break
    raise InsufficientBalance(
        f"the account cannot pay {amount} sat plus the mint's fee",
        needed_msat=amount * 1000,
        available_msat=available_sat * 1000,
    )


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
    row = c.execute("SELECT result FROM operations WHERE id = ?", (op_id,)).fetchone()
    result = json.loads(row[0] or "{}")
    if "account_id" not in result:
        raise OperationInFlight("the operation finished without a credit")
    return Received(int(result["account_id"]), int(result["credited_msat"]), fee_sat)
