"""Custody's transactions that span proofs, operations and the ledger, for PostgreSQL:
as :mod:`wallet.sqlite.completions`, and each completion first locks its operation's
row, so two processes finishing the same operation do it once."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TypeVar

from mints.models import Proof
from wallet.errors import KeysAlreadyDelivered, OperationInFlight
from wallet.operations import (
    Intent,
    InvoiceState,
    IssueIntent,
    MeltIntent,
    NewAccount,
    Operation,
    OperationResult,
    OperationState,
    OutputRow,
    ReceiveIntent,
    SendIntent,
    SpendIntent,
)
from wallet.postgres import custody as sql
from wallet.postgres import invoices as invoices_sql
from wallet.postgres import ledger as ledger_sql
from wallet.postgres.ledger import Conn
from wallet.records import AccountRow, Credit, StoredProof

OPEN_INVOICE_STATES = (InvoiceState.UNPAID.value, InvoiceState.EXPIRED.value)
IntentT = TypeVar("IntentT", ReceiveIntent, SendIntent, MeltIntent, IssueIntent)


def _expect(op: Operation, kind: type[IntentT]) -> IntentT:
    intent: Intent = op.intent
    if not isinstance(intent, kind):
        raise TypeError(f"operation {op.id} is a {op.kind}, not a {kind.__name__}")
    return intent


async def _pending(c: Conn, op_id: int) -> bool:
    return await sql.operation_state(c, op_id, lock=True) is OperationState.PENDING


async def write_spend(
    c: Conn,
    intent: SpendIntent,
    mint_url: str,
    hold_msat: int,
    purpose: str,
    rows: Sequence[OutputRow],
    proof_ids: Sequence[int],
    quote_id: str | None,
    on_written: Callable[[int], None],
) -> tuple[int, list[StoredProof]]:
    reservation = await ledger_sql.reserve(c, intent.account_id, hold_msat, purpose)
    written = dataclasses.replace(intent, reservation_id=reservation)
    op_id = await sql.insert_operation(c, written, mint_url, rows, quote_id=quote_id)
    on_written(op_id)
    await sql.lock_proofs(c, proof_ids, op_id)
    return op_id, await sql.operation_inputs(c, op_id)


async def write_receive(
    c: Conn,
    intent: ReceiveIntent,
    mint_url: str,
    rows: Sequence[OutputRow],
    token_id: str,
    foreign_inputs: Sequence[Proof],
    on_written: Callable[[int], None],
) -> int:
    op_id = await sql.insert_operation(
        c, intent, mint_url, rows, token_id=token_id, foreign_inputs=foreign_inputs
    )
    on_written(op_id)
    return op_id


async def write_issue(
    c: Conn, intent: IssueIntent, mint_url: str, rows: Sequence[OutputRow], quote_id: str
) -> int | None:
    if not await invoices_sql.set_state(c, intent.invoice_id, "minting", OPEN_INVOICE_STATES):
        return None
    op_id = await sql.insert_operation(c, intent, mint_url, rows, quote_id=quote_id)
    await invoices_sql.set_operation(c, intent.invoice_id, op_id)
    return op_id


async def send_exact(
    c: Conn,
    account_id: int,
    mint_url: str,
    amount_sat: int,
    proof_ids: Sequence[int],
    purpose: str,
    make_token: Callable[[list[Proof]], str],
) -> str:
    stored = await sql.proofs_by_ids(c, proof_ids)
    token = make_token([s.proof for s in stored])
    reservation = await ledger_sql.reserve(c, account_id, amount_sat * 1000, purpose)
    out_id = await sql.insert_outgoing_token(c, account_id, purpose, mint_url, amount_sat, token)
    await sql.mark_sent(c, proof_ids, out_id)
    await ledger_sql.settle(c, reservation, amount_sat * 1000, destination="out")
    return token


async def revert_spend(c: Conn, op_id: int, error: str) -> None:
    if not await _pending(c, op_id):
        return
    op = await sql.operation(c, op_id)
    await sql.settle_inputs(c, op_id, "unspent")
    match op.intent:
        case SendIntent(reservation_id=reservation) | MeltIntent(reservation_id=reservation):
            await ledger_sql.settle(c, reservation, 0, operation_id=op_id)
    await sql.finish_operation(c, op_id, OperationState.FAILED, error=error[:500])


async def _open_account(c: Conn, spec: NewAccount, token_id: str | None, mint_url: str) -> int:
    return await ledger_sql.create_account(
        c,
        spec.kind,
        key_hash=spec.key_hash,
        admin_key_hash=spec.admin_key_hash,
        token_id=token_id if spec.token_is_key else None,
        mint_url=mint_url,
    )


async def credited(c: Conn, op_id: int) -> Credit:
    result = await sql.operation_result(c, op_id)
    if result.account_id is None:
        raise OperationInFlight("the operation finished without a credit")
    return Credit(result.account_id, result.credited_msat or 0)


async def complete_receive(
    c: Conn,
    op: Operation,
    proofs: Sequence[StoredProof],
    credited_msat: int,
    reserve_msat: int | None,
) -> Credit:
    intent = _expect(op, ReceiveIntent)
    if not await _pending(c, op.id):
        return await credited(c, op.id)
    await sql.insert_proofs(c, op.mint_url, proofs, state="unspent", operation_id=op.id)
    if intent.account_id is not None:
        account_id = intent.account_id
    else:
        assert intent.create is not None
        account_id = await _open_account(c, intent.create, op.token_id, op.mint_url)
    if credited_msat:
        await ledger_sql.credit_from_custody(c, account_id, credited_msat, operation_id=op.id)
    await sql.finish_operation(
        c,
        op.id,
        OperationState.DONE,
        result=OperationResult(account_id=account_id, credited_msat=credited_msat),
    )
    reservation_id = None
    if reserve_msat is not None and 0 < reserve_msat <= credited_msat:
        reservation_id = await ledger_sql.reserve(c, account_id, reserve_msat, "request")
    return Credit(account_id, credited_msat, reservation_id)


async def complete_send(
    c: Conn,
    op: Operation,
    keep: Sequence[StoredProof],
    send: Sequence[StoredProof],
    token: str,
) -> str:
    intent = _expect(op, SendIntent)
    if not await _pending(c, op.id):
        return await sql.operation_token(c, op.id)
    await sql.settle_inputs(c, op.id, "spent")
    await sql.insert_proofs(c, op.mint_url, keep, state="unspent", operation_id=op.id)
    out_id = await sql.insert_outgoing_token(
        c, intent.account_id, intent.purpose, op.mint_url, intent.amount_sat, token
    )
    await sql.insert_proofs(
        c, op.mint_url, send, state="sent", operation_id=op.id, outgoing_token_id=out_id
    )
    await ledger_sql.settle(
        c,
        intent.reservation_id,
        (intent.amount_sat + intent.fee_sat) * 1000,
        destination="out",
        operation_id=op.id,
    )
    await sql.finish_operation(
        c, op.id, OperationState.DONE, result=OperationResult(outgoing_token_id=out_id)
    )
    return token


async def complete_melt(c: Conn, op: Operation, change: Sequence[StoredProof]) -> int | None:
    intent = _expect(op, MeltIntent)
    if not await _pending(c, op.id):
        return None
    inputs = await sql.operation_inputs(c, op.id)
    spent = sum(s.proof.amount for s in inputs)
    await sql.settle_inputs(c, op.id, "spent")
    await sql.insert_proofs(c, op.mint_url, change, state="unspent", operation_id=op.id)
    cost = spent - sum(s.proof.amount for s in change)
    await ledger_sql.settle(
        c, intent.reservation_id, cost * 1000, destination="out", operation_id=op.id
    )
    await sql.finish_operation(c, op.id, OperationState.DONE, result=OperationResult(cost_sat=cost))
    return cost


async def complete_issue(
    c: Conn, op: Operation, proofs: Sequence[StoredProof], credited_msat: int
) -> None:
    intent = _expect(op, IssueIntent)
    if not await _pending(c, op.id):
        return
    await sql.insert_proofs(c, op.mint_url, proofs, state="unspent", operation_id=op.id)
    if intent.account_id is not None:
        account_id = intent.account_id
    else:
        account_id = await ledger_sql.create_account(c, "key", mint_url=op.mint_url)
    if credited_msat:
        await ledger_sql.credit_from_custody(
            c, account_id, credited_msat, operation_id=op.id, kind="lightning_in"
        )
    await sql.finish_operation(
        c,
        op.id,
        OperationState.DONE,
        result=OperationResult(account_id=account_id, credited_msat=credited_msat),
    )
    await invoices_sql.mark_paid(c, intent.invoice_id, account_id, credited_msat)


async def fail_issue(c: Conn, op_id: int, invoice_id: str, invoice_state: str, error: str) -> None:
    if await sql.finish_operation(c, op_id, OperationState.FAILED, error=error[:500]):
        await invoices_sql.release_minting(c, invoice_id, invoice_state)


async def mark_inputs_lost(c: Conn, op_id: int, error: str) -> None:
    if not await _pending(c, op_id):
        return
    await sql.settle_inputs(c, op_id, "spent")
    await sql.finish_operation(c, op_id, OperationState.FAILED, error=error)


async def deliver_invoice_keys(
    c: Conn, invoice_id: str, key_hash: str, admin_key_hash: str, reissue_since: int
) -> AccountRow | None:
    # the invoice's row held to the end: two processes asked at once hand out keys once
    await c.execute("SELECT 1 FROM invoices WHERE id = $1 FOR UPDATE", invoice_id)
    record = await invoices_sql.invoice(c, invoice_id)
    assert record is not None
    if record.account_id is not None or record.state != "paid":
        return None
    if record.keys_delivered:  # asked again: the answer with them may have been lost
        op_id = await invoices_sql.operation_id(c, invoice_id)
        account = None
        if record.credited_account_id is not None and op_id is not None:
            account = await ledger_sql.reissue_keys_if_untouched(
                c, record.credited_account_id, op_id, key_hash, admin_key_hash, reissue_since
            )
        if account is None:
            raise KeysAlreadyDelivered("the keys of this invoice were handed over before")
        return account
    if record.credited_account_id is None:
        raise KeysAlreadyDelivered("the keys of this invoice were handed over before")
    await invoices_sql.mark_keys_delivered(c, invoice_id)
    account_id = record.credited_account_id
    if not await ledger_sql.give_keys(c, account_id, key_hash, admin_key_hash):
        raise KeysAlreadyDelivered("the account already has keys")
    return await ledger_sql.get_account(c, account_id)
