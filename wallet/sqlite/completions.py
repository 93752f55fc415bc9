"""Custody's transactions that span proofs, operations and the ledger: writing an
operation down with its holds, and storing what the mint answered with its credit or
charge. Each runs inside one write transaction of :mod:`wallet.sqlite.database`."""

from __future__ import annotations

import dataclasses
import sqlite3
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
from wallet.records import AccountRow, Credit, StoredProof
from wallet.sqlite import custody as sql
from wallet.sqlite import invoices as invoices_sql
from wallet.sqlite import ledger as ledger_sql
from wallet.sqlite import outgoing as outgoing_sql

OPEN_INVOICE_STATES = (InvoiceState.UNPAID.value, InvoiceState.EXPIRED.value)
IntentT = TypeVar("IntentT", ReceiveIntent, SendIntent, MeltIntent, IssueIntent)


def _expect(op: Operation, kind: type[IntentT]) -> IntentT:
    """The operation's intent as the completion of its kind expects it."""
    intent: Intent = op.intent
    if not isinstance(intent, kind):
        raise TypeError(f"operation {op.id} is a {op.kind}, not a {kind.__name__}")
    return intent


def write_spend(
    c: sqlite3.Connection,
    intent: SpendIntent,
    mint_url: str,
    hold_msat: int,
    purpose: str,
    rows: Sequence[OutputRow],
    proof_ids: Sequence[int],
    quote_id: str | None,
    on_written: Callable[[int], None],
) -> tuple[int, list[StoredProof]]:
    reservation = ledger_sql.reserve(c, intent.account_id, hold_msat, purpose)
    written = dataclasses.replace(intent, reservation_id=reservation)
    op_id = sql.insert_operation(c, written, mint_url, rows, quote_id=quote_id)
    on_written(op_id)
    sql.lock_proofs(c, proof_ids, op_id)
    return op_id, sql.operation_inputs(c, op_id)


def write_receive(
    c: sqlite3.Connection,
    intent: ReceiveIntent,
    mint_url: str,
    rows: Sequence[OutputRow],
    token_id: str,
    foreign_inputs: Sequence[Proof],
    on_written: Callable[[int], None],
) -> int:
    op_id = sql.insert_operation(
        c, intent, mint_url, rows, token_id=token_id, foreign_inputs=foreign_inputs
    )
    on_written(op_id)
    return op_id


def write_issue(
    c: sqlite3.Connection,
    intent: IssueIntent,
    mint_url: str,
    rows: Sequence[OutputRow],
    quote_id: str,
) -> int | None:
    if not invoices_sql.set_state(c, intent.invoice_id, "minting", OPEN_INVOICE_STATES):
        return None
    op_id = sql.insert_operation(c, intent, mint_url, rows, quote_id=quote_id)
    invoices_sql.set_operation(c, intent.invoice_id, op_id)
    return op_id


def send_exact(
    c: sqlite3.Connection,
    account_id: int,
    mint_url: str,
    amount_sat: int,
    proof_ids: Sequence[int],
    purpose: str,
    make_token: Callable[[list[Proof]], str],
) -> str:
    stored = sql.proofs_by_ids(c, proof_ids)
    token = make_token([s.proof for s in stored])
    reservation = ledger_sql.reserve(c, account_id, amount_sat * 1000, purpose)
    out_id = outgoing_sql.insert_outgoing_token(c, account_id, purpose, mint_url, amount_sat, token)
    sql.mark_sent(c, proof_ids, out_id)
    ledger_sql.settle(c, reservation, amount_sat * 1000, destination="out")
    return token


def revert_spend(c: sqlite3.Connection, op_id: int, error: str) -> None:
    op = sql.operation(c, op_id)
    if op.state != OperationState.PENDING:
        return
    sql.settle_inputs(c, op_id, "unspent")
    match op.intent:
        case SendIntent(reservation_id=reservation) | MeltIntent(reservation_id=reservation):
            ledger_sql.settle(c, reservation, 0, operation_id=op_id)
    sql.finish_operation(c, op_id, OperationState.FAILED, error=error[:500])


def _open_account(
    c: sqlite3.Connection, spec: NewAccount, token_id: str | None, mint_url: str
) -> int:
    return ledger_sql.create_account(
        c,
        spec.kind,
        key_hash=spec.key_hash,
        admin_key_hash=spec.admin_key_hash,
        token_id=token_id if spec.token_is_key else None,
        mint_url=mint_url,
    )


def credited(c: sqlite3.Connection, op_id: int) -> Credit:
    result = sql.operation_result(c, op_id)
    if result.account_id is None:
        raise OperationInFlight("the operation finished without a credit")
    return Credit(result.account_id, result.credited_msat or 0)


def complete_receive(
    c: sqlite3.Connection,
    op: Operation,
    proofs: Sequence[StoredProof],
    credited_msat: int,
    reserve_msat: int | None,
) -> Credit:
    intent = _expect(op, ReceiveIntent)
    if sql.operation_state(c, op.id) is not OperationState.PENDING:
        return credited(c, op.id)
    sql.insert_proofs(c, op.mint_url, proofs, state="unspent", operation_id=op.id)
    if intent.account_id is not None:
        account_id = intent.account_id
    else:
        assert intent.create is not None
        account_id = _open_account(c, intent.create, op.token_id, op.mint_url)
    if credited_msat:
        ledger_sql.credit_from_custody(c, account_id, credited_msat, operation_id=op.id)
    sql.finish_operation(
        c,
        op.id,
        OperationState.DONE,
        result=OperationResult(account_id=account_id, credited_msat=credited_msat),
    )
    reservation_id = None
    if reserve_msat is not None and 0 < reserve_msat <= credited_msat:
        reservation_id = ledger_sql.reserve(c, account_id, reserve_msat, "request")
    return Credit(account_id, credited_msat, reservation_id)


def complete_send(
    c: sqlite3.Connection,
    op: Operation,
    keep: Sequence[StoredProof],
    send: Sequence[StoredProof],
    token: str,
) -> str:
    intent = _expect(op, SendIntent)
    if sql.operation_state(c, op.id) is not OperationState.PENDING:
        return sql.operation_token(c, op.id)
    sql.settle_inputs(c, op.id, "spent")
    sql.insert_proofs(c, op.mint_url, keep, state="unspent", operation_id=op.id)
    out_id = outgoing_sql.insert_outgoing_token(
        c, intent.account_id, intent.purpose, op.mint_url, intent.amount_sat, token
    )
    sql.insert_proofs(
        c, op.mint_url, send, state="sent", operation_id=op.id, outgoing_token_id=out_id
    )
    ledger_sql.settle(
        c,
        intent.reservation_id,
        (intent.amount_sat + intent.fee_sat) * 1000,
        destination="out",
        operation_id=op.id,
    )
    sql.finish_operation(
        c, op.id, OperationState.DONE, result=OperationResult(outgoing_token_id=out_id)
    )
    return token


def complete_melt(
    c: sqlite3.Connection, op: Operation, change: Sequence[StoredProof]
) -> int | None:
    intent = _expect(op, MeltIntent)
    inputs = sql.operation_inputs(c, op.id)
    spent = sum(s.proof.amount for s in inputs)
    if sql.operation_state(c, op.id) is not OperationState.PENDING:
        return None
    sql.settle_inputs(c, op.id, "spent")
    sql.insert_proofs(c, op.mint_url, change, state="unspent", operation_id=op.id)
    cost = spent - sum(s.proof.amount for s in change)
    ledger_sql.settle(c, intent.reservation_id, cost * 1000, destination="out", operation_id=op.id)
    sql.finish_operation(c, op.id, OperationState.DONE, result=OperationResult(cost_sat=cost))
    return cost


def complete_issue(
    c: sqlite3.Connection, op: Operation, proofs: Sequence[StoredProof], credited_msat: int
) -> None:
    intent = _expect(op, IssueIntent)
    if sql.operation_state(c, op.id) is not OperationState.PENDING:
        return
    sql.insert_proofs(c, op.mint_url, proofs, state="unspent", operation_id=op.id)
    if intent.account_id is not None:
        account_id = intent.account_id
    else:
        account_id = ledger_sql.create_account(c, "key", mint_url=op.mint_url)
    if credited_msat:
        ledger_sql.credit_from_custody(
            c, account_id, credited_msat, operation_id=op.id, kind="lightning_in"
        )
    sql.finish_operation(
        c,
        op.id,
        OperationState.DONE,
        result=OperationResult(account_id=account_id, credited_msat=credited_msat),
    )
    invoices_sql.mark_paid(c, intent.invoice_id, account_id, credited_msat)


def fail_issue(
    c: sqlite3.Connection, op_id: int, invoice_id: str, invoice_state: str, error: str
) -> None:
    if sql.finish_operation(c, op_id, OperationState.FAILED, error=error[:500]):
        invoices_sql.release_minting(c, invoice_id, invoice_state)


def mark_inputs_lost(c: sqlite3.Connection, op_id: int, error: str) -> None:
    sql.settle_inputs(c, op_id, "spent")
    sql.finish_operation(c, op_id, OperationState.FAILED, error=error)


def deliver_invoice_keys(
    c: sqlite3.Connection,
    invoice_id: str,
    key_hash: str,
    admin_key_hash: str,
    reissue_since: int,
) -> AccountRow | None:
    record = invoices_sql.invoice(c, invoice_id)
    assert record is not None
    if record.account_id is not None or record.state != "paid":
        return None
    if record.keys_delivered:  # asked again: the answer with them may have been lost
        op_id = invoices_sql.operation_id(c, invoice_id)
        account = None
        if record.credited_account_id is not None and op_id is not None:
            account = ledger_sql.reissue_keys_if_untouched(
                c, record.credited_account_id, op_id, key_hash, admin_key_hash, reissue_since
            )
        if account is None:
            raise KeysAlreadyDelivered("the keys of this invoice were handed over before")
        return account
    if record.credited_account_id is None:
        raise KeysAlreadyDelivered("the keys of this invoice were handed over before")
    invoices_sql.mark_keys_delivered(c, invoice_id)
    account_id = record.credited_account_id
    if not ledger_sql.give_keys(c, account_id, key_hash, admin_key_hash):
        raise KeysAlreadyDelivered("the account already has keys")
    return ledger_sql.get_account(c, account_id)
