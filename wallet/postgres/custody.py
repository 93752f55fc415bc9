"""Custody statements for PostgreSQL: proofs, write-ahead operations, outgoing tokens.

As :mod:`wallet.sqlite.custody`, for many processes: a proof is locked by one
conditional UPDATE (another process's lock on it makes the count fall short, and the
selection is made again), and a token's live operation is unique in the database, so a
token raced across processes is redeemed once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import asyncpg

from mints.models import Proof
from mints.outputs import PreparedOutput
from wallet.errors import TokenAlreadyRedeemed, TokenBeingRedeemed
from wallet.operations import (
    Intent,
    Operation,
    OperationKind,
    OperationResult,
    OperationState,
    OutputRole,
    OutputRow,
    decode_intent,
    encode_intent,
)
from wallet.postgres.ledger import Conn, _count, now
from wallet.records import WITHDRAWN, RefundRow, StoredProof, Withdrawal
from wallet.selection import Coin


class SelectionConflict(Exception):
    """Another operation took one of the selected proofs first."""


async def claim_counters(conn: Conn, keyset_id: str, count: int) -> int:
    """The first of ``count`` counters no process has used or claimed for this keyset."""
    await conn.execute(
        "INSERT INTO counters (keyset_id, next) VALUES ($1, 0) ON CONFLICT DO NOTHING",
        keyset_id,
    )
    stored = int(
        await conn.fetchval("SELECT next FROM counters WHERE keyset_id = $1 FOR UPDATE", keyset_id)
    )
    used = int(
        await conn.fetchval(
            "SELECT COALESCE(MAX(counter) + 1, 0) FROM operation_outputs WHERE keyset_id = $1",
            keyset_id,
        )
    )
    first = max(stored, used)
    await conn.execute(
        "UPDATE counters SET next = $1 WHERE keyset_id = $2", first + count, keyset_id
    )
    return first


async def insert_operation(
    conn: Conn,
    intent: Intent,
    mint_url: str,
    outputs: Sequence[OutputRow],
    *,
    token_id: str | None = None,
    foreign_inputs: Sequence[Proof] = (),
    quote_id: str | None = None,
) -> int:
    """Write an operation down before it is sent: intent, inputs and every output's secrets."""
    if token_id is not None:
        existing = await conn.fetchrow(
            "SELECT state, result FROM operations WHERE token_id = $1 AND state != 'failed'",
            token_id,
        )
        if existing is not None:
            _already(existing[0], existing[1])
    try:
        async with conn.transaction():  # a savepoint: a lost race is answered, not raised raw
            op_id = int(
                await conn.fetchval(
                    "INSERT INTO operations (kind, mint_url, state, token_id, foreign_inputs,"
                    " intent, quote_id, created_at)"
                    " VALUES ($1, $2, 'pending', $3, $4, $5, $6, $7) RETURNING id",
                    str(intent.kind),
                    mint_url,
                    token_id,
                    json.dumps([p.to_wire() for p in foreign_inputs]) if foreign_inputs else None,
                    encode_intent(intent),
                    quote_id,
                    now(),
                )
            )
    except asyncpg.UniqueViolationError:
        # another process wrote this token's operation down a moment ago
        raise TokenBeingRedeemed("this token is being redeemed by another request") from None
    await conn.executemany(
        "INSERT INTO operation_outputs (operation_id, idx, role, keyset_id, amount, counter,"
        " secret, r, b_) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        [
            (op_id, i, str(o.role), o.output.keyset_id, o.output.amount, o.output.counter,
             o.output.secret, o.output.r, o.output.B_)
            for i, o in enumerate(outputs)
        ],
    )  # fmt: skip
    tops: dict[str, int] = {}
    for o in outputs:
        tops[o.output.keyset_id] = max(tops.get(o.output.keyset_id, 0), o.output.counter + 1)
    for keyset_id, top in tops.items():
        await conn.execute(
            "INSERT INTO counters (keyset_id, next) VALUES ($1, $2) ON CONFLICT (keyset_id)"
            " DO UPDATE SET next = GREATEST(counters.next, excluded.next)",
            keyset_id, top,
        )  # fmt: skip
    return op_id


def _already(state: str, result: str | None) -> None:
    if state == OperationState.PENDING:
        raise TokenBeingRedeemed("this token is being redeemed by another request")
    raise TokenAlreadyRedeemed(
        "this token was already redeemed here",
        account_id=OperationResult.decode(result).account_id,
    )


async def pending_receive_of_token(conn: Conn, token_id: str) -> int | None:
    value = await conn.fetchval(
        "SELECT id FROM operations WHERE token_id = $1 AND state = 'pending'", token_id
    )
    return int(value) if value is not None else None


async def account_made_by_token(conn: Conn, token_id: str) -> int | None:
    row = await conn.fetchrow(
        "SELECT state, result FROM operations WHERE token_id = $1 AND state != 'failed'",
        token_id,
    )
    if row is None or row[0] != OperationState.DONE:
        return None
    return OperationResult.decode(row[1]).account_id


_OPERATION = "id, kind, mint_url, state, token_id, foreign_inputs, intent, quote_id"


def _operation(row: Any) -> Operation:
    inputs = [
        Proof(amount=int(p["amount"]), keyset_id=p["id"], secret=p["secret"], C=p["C"])
        for p in json.loads(row[5] or "[]")
    ]
    return Operation(
        int(row[0]),
        str(row[2]),
        OperationState(row[3]),
        decode_intent(OperationKind(row[1]), row[6]),
        row[4],
        inputs,
        row[7],
    )


async def operation(conn: Conn, op_id: int) -> Operation:
    row = await conn.fetchrow(f"SELECT {_OPERATION} FROM operations WHERE id = $1", op_id)
    if row is None:
        raise KeyError(op_id)
    return _operation(row)


async def operation_state(conn: Conn, op_id: int, *, lock: bool = False) -> OperationState:
    """Only the state; with ``lock`` the row is held to the end of the transaction, so
    two processes completing the same operation do it one after the other."""
    suffix = " FOR UPDATE" if lock else ""
    value = await conn.fetchval(f"SELECT state FROM operations WHERE id = $1{suffix}", op_id)
    if value is None:
        raise KeyError(op_id)
    return OperationState(value)


async def pending_operations(conn: Conn, mine: str, holder: str) -> list[Operation]:
    """Pending operations this process may finish (``mine``: a condition on $1, the
    process: its own, and those of processes that are gone)."""
    rows = await conn.fetch(
        f"SELECT {_OPERATION} FROM operations WHERE state = 'pending' AND {mine} ORDER BY id",
        holder,
    )
    return [_operation(r) for r in rows]


async def stale_operation_ids(conn: Conn, written_by: int, mine: str, holder: str) -> list[int]:
    rows = await conn.fetch(
        "SELECT id FROM operations WHERE state = 'pending' AND kind != 'mint'"
        f" AND created_at <= $2 AND {mine} ORDER BY id",
        holder,
        written_by,
    )
    return [int(r[0]) for r in rows]


async def operation_outputs(conn: Conn, op_id: int) -> list[OutputRow]:
    rows = await conn.fetch(
        "SELECT role, keyset_id, amount, counter, secret, r, b_ FROM operation_outputs"
        " WHERE operation_id = $1 ORDER BY idx",
        op_id,
    )
    return [
        OutputRow(
            OutputRole(r[0]),
            PreparedOutput(
                amount=int(r[2]), keyset_id=r[1], counter=int(r[3]), secret=r[4], r=r[5], B_=r[6]
            ),
        )
        for r in rows
    ]


async def finish_operation(
    conn: Conn,
    op_id: int,
    state: OperationState,
    *,
    result: OperationResult | None = None,
    error: str | None = None,
) -> bool:
    status = await conn.execute(
        "UPDATE operations SET state = $1, result = $2, error = $3, finished_at = $4"
        " WHERE id = $5 AND state = 'pending'",
        str(state), result.encode() if result is not None else None, error, now(), op_id,
    )  # fmt: skip
    return _count(status) == 1


async def insert_proofs(
    conn: Conn,
    mint_url: str,
    proofs: Sequence[StoredProof],
    *,
    state: str,
    operation_id: int | None = None,
    outgoing_token_id: int | None = None,
) -> None:
    if not proofs:
        return
    at = now()
    await conn.executemany(
        "INSERT INTO proofs (mint_url, keyset_id, amount, secret, c, y, state, operation_id,"
        " outgoing_token_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        [
            (mint_url, s.proof.keyset_id, s.proof.amount, s.proof.secret, s.proof.C, s.y,
             state, operation_id, outgoing_token_id, at)
            for s in proofs
        ],
    )  # fmt: skip


async def selectable_coins(
    conn: Conn, mint_url: str, per_amount: int | None
) -> tuple[list[Coin], bool]:
    """The oldest ``per_amount`` unspent proofs of each amount (None: all), and whether
    some were left out; hopping from amount to amount on the index."""
    if per_amount is None:
        rows = await conn.fetch(
            "SELECT id, amount, keyset_id FROM proofs WHERE state = 'unspent' AND mint_url = $1",
            mint_url,
        )
        return [Coin(int(r[0]), int(r[1]), str(r[2])) for r in rows], False
    rows = await conn.fetch(
        "WITH RECURSIVE denomination(amount) AS ("
        " SELECT MIN(amount) FROM proofs WHERE state = 'unspent' AND mint_url = $1"
        " UNION ALL"
        " SELECT (SELECT MIN(amount) FROM proofs WHERE state = 'unspent' AND mint_url = $1"
        " AND amount > denomination.amount) FROM denomination"
        " WHERE denomination.amount IS NOT NULL)"
        " SELECT p.id, p.amount, p.keyset_id FROM denomination d CROSS JOIN LATERAL"
        " (SELECT id, amount, keyset_id FROM proofs WHERE state = 'unspent' AND mint_url = $1"
        " AND amount = d.amount ORDER BY id LIMIT $2) p WHERE d.amount IS NOT NULL",
        mint_url,
        per_amount + 1,
    )
    coins: list[Coin] = []
    taken: dict[int, int] = {}
    left_out = False
    for r in rows:
        amount = int(r[1])
        taken[amount] = taken.get(amount, 0) + 1
        if taken[amount] > per_amount:
            left_out = True
            continue
        coins.append(Coin(int(r[0]), amount, str(r[2])))
    return coins, left_out


async def held_mint_urls(conn: Conn) -> list[str]:
    rows = await conn.fetch(
        "WITH RECURSIVE mint(url) AS ("
        " SELECT MIN(mint_url) FROM proofs WHERE state = 'unspent'"
        " UNION ALL"
        " SELECT (SELECT MIN(mint_url) FROM proofs WHERE state = 'unspent'"
        " AND mint_url > mint.url) FROM mint WHERE mint.url IS NOT NULL)"
        " SELECT url FROM mint WHERE url IS NOT NULL"
    )
    return sorted(str(r[0]) for r in rows)


async def has_operations_in_flight(conn: Conn, mint_url: str) -> bool:
    value = await conn.fetchval(
        "SELECT 1 FROM operations WHERE state = 'pending' AND mint_url = $1 LIMIT 1", mint_url
    )
    return value is not None


async def lock_proofs(conn: Conn, proof_ids: Sequence[int], op_id: int) -> None:
    """Mark proofs as inputs of an operation; SelectionConflict if any is taken."""
    status = await conn.execute(
        "UPDATE proofs SET state = 'pending', operation_id = $1"
        " WHERE id = ANY($2::bigint[]) AND state = 'unspent'",
        op_id, list(proof_ids),
    )  # fmt: skip
    if _count(status) != len(proof_ids):
        raise SelectionConflict()


async def operation_inputs(conn: Conn, op_id: int) -> list[StoredProof]:
    rows = await conn.fetch(
        "SELECT amount, keyset_id, secret, c, y FROM proofs WHERE operation_id = $1"
        " AND state = 'pending' ORDER BY id",
        op_id,
    )
    return [StoredProof(Proof(int(r[0]), r[1], r[2], r[3]), r[4]) for r in rows]


async def proofs_by_ids(conn: Conn, proof_ids: Sequence[int]) -> list[StoredProof]:
    rows = await conn.fetch(
        "SELECT amount, keyset_id, secret, c, y FROM proofs WHERE id = ANY($1::bigint[])"
        " ORDER BY id",
        list(proof_ids),
    )
    return [StoredProof(Proof(int(r[0]), r[1], r[2], r[3]), r[4]) for r in rows]


async def settle_inputs(conn: Conn, op_id: int, state: str) -> int:
    status = await conn.execute(
        "UPDATE proofs SET state = $1 WHERE operation_id = $2 AND state = 'pending'",
        state, op_id,
    )  # fmt: skip
    return _count(status)


async def mark_sent(conn: Conn, proof_ids: Sequence[int], outgoing_token_id: int) -> None:
    status = await conn.execute(
        "UPDATE proofs SET state = 'sent', outgoing_token_id = $1"
        " WHERE id = ANY($2::bigint[]) AND state = 'unspent'",
        outgoing_token_id, list(proof_ids),
    )  # fmt: skip
    if _count(status) != len(proof_ids):
        raise SelectionConflict()


async def operation_result(conn: Conn, op_id: int) -> OperationResult:
    value = await conn.fetchval("SELECT result FROM operations WHERE id = $1", op_id)
    return OperationResult.decode(value)


async def operation_token(conn: Conn, op_id: int) -> str:
    value = await conn.fetchval(
        "SELECT t.token FROM operations o JOIN outgoing_tokens t"
        " ON t.id = (o.result::jsonb ->> 'outgoing_token_id')::bigint WHERE o.id = $1",
        op_id,
    )
    return str(value) if value is not None else ""


# -- outgoing tokens ---------------------------------------------------------------------


async def insert_outgoing_token(
    conn: Conn, account_id: int | None, purpose: str, mint_url: str, amount_sat: int, token: str
) -> int:
    return int(
        await conn.fetchval(
            "INSERT INTO outgoing_tokens (account_id, purpose, mint_url, amount_sat, token,"
            " created_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            account_id, purpose, mint_url, amount_sat, token, now(),
        )
    )  # fmt: skip


async def outgoing_tokens(conn: Conn, account_id: int, purpose: str) -> list[tuple[str, int]]:
    rows = await conn.fetch(
        "SELECT token, amount_sat FROM outgoing_tokens WHERE account_id = $1 AND purpose = $2"
        " ORDER BY id",
        account_id, purpose,
    )  # fmt: skip
    return [(str(r[0]), int(r[1])) for r in rows]


async def withdrawals(conn: Conn, account_id: int, limit: int) -> list[Withdrawal]:
    rows = await conn.fetch(
        "SELECT token, amount_sat, mint_url, created_at FROM outgoing_tokens"
        " WHERE account_id = $1 AND purpose = ANY($2::text[]) ORDER BY id DESC LIMIT $3",
        account_id, list(WITHDRAWN), limit,
    )  # fmt: skip
    return [Withdrawal(str(r[0]), int(r[1]), str(r[2]), int(r[3])) for r in rows]


async def last_refund_if_untouched(conn: Conn, account_id: int) -> RefundRow | None:
    account = await conn.fetchrow(
        "SELECT balance_msat, reserved_msat FROM accounts WHERE id = $1", account_id
    )
    if account is None or account[0] >= 1000 or account[1] != 0:
        return None
    last = await conn.fetchrow(
        "SELECT j.kind, r.purpose FROM accounts a"
        " JOIN journal j ON j.id = a.last_journal_id"
        " LEFT JOIN reservations r ON r.id = j.reservation_id"
        " WHERE a.id = $1",
        account_id,
    )
    if last is None or (last[0], last[1]) != ("charge", "refund"):
        return None
    token = await conn.fetchrow(
        "SELECT id, token, amount_sat, mint_url FROM outgoing_tokens"
        " WHERE account_id = $1 AND purpose = 'refund' ORDER BY id DESC LIMIT 1",
        account_id,
    )
    if token is None:
        return None
    ys = [
        str(r[0])
        for r in await conn.fetch("SELECT y FROM proofs WHERE outgoing_token_id = $1", token[0])
    ]
    return RefundRow(str(token[1]), int(token[2]), str(token[3]), ys)
