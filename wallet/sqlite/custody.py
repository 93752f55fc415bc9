"""Custody transactions: proofs, write-ahead operations and their outputs."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

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
from wallet.records import StoredProof
from wallet.selection import Coin
from wallet.sqlite.ledger import now
from wallet.store import COINS_PER_AMOUNT

__all__ = ["COINS_PER_AMOUNT", "Operation", "OutputRow", "StoredProof"]


def next_counter(conn: sqlite3.Connection, keyset_id: str) -> int:
    """The first derivation counter never used for this keyset (from counters and outputs)."""
    row = conn.execute("SELECT next FROM counters WHERE keyset_id = ?", (keyset_id,)).fetchone()
    stored = int(row[0]) if row else 0
    used = conn.execute(
        "SELECT COALESCE(MAX(counter) + 1, 0) FROM operation_outputs WHERE keyset_id = ?",
        (keyset_id,),
    ).fetchone()[0]
    return max(stored, int(used))


def bump_counter(conn: sqlite3.Connection, keyset_id: str, next_value: int) -> None:
    conn.execute(
        "INSERT INTO counters (keyset_id, next) VALUES (?, ?)"
        " ON CONFLICT (keyset_id) DO UPDATE SET next = MAX(next, excluded.next)",
        (keyset_id, next_value),
    )


def insert_operation(
    conn: sqlite3.Connection,
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
        existing = conn.execute(
            "SELECT state, result FROM operations WHERE token_id = ? AND state != 'failed'",
            (token_id,),
        ).fetchone()
        if existing is not None:
            if existing[0] == OperationState.PENDING:
                raise TokenBeingRedeemed("this token is being redeemed by another request")
            result = OperationResult.decode(existing[1])
            raise TokenAlreadyRedeemed(
                "this token was already redeemed here", account_id=result.account_id
            )
    cur = conn.execute(
        "INSERT INTO operations (kind, mint_url, state, token_id, foreign_inputs, intent,"
        " quote_id, created_at) VALUES (?, ?, 'pending', ?, ?, ?, ?, ?)",
        (
            intent.kind,
            mint_url,
            token_id,
            json.dumps([p.to_wire() for p in foreign_inputs]) if foreign_inputs else None,
            encode_intent(intent),
            quote_id,
            now(),
        ),
    )
    op_id = cur.lastrowid
    assert op_id is not None
    conn.executemany(
        "INSERT INTO operation_outputs (operation_id, idx, role, keyset_id, amount, counter,"
        " secret, r, b_) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                op_id,
                i,
                o.role,
                o.output.keyset_id,
                o.output.amount,
                o.output.counter,
                o.output.secret,
                o.output.r,
                o.output.B_,
            )
            for i, o in enumerate(outputs)
        ],
    )
    tops: dict[str, int] = {}
    for o in outputs:
        tops[o.output.keyset_id] = max(tops.get(o.output.keyset_id, 0), o.output.counter + 1)
    for keyset_id, top in tops.items():
        bump_counter(conn, keyset_id, top)
    return op_id


def token_being_redeemed(conn: sqlite3.Connection, token_id: str) -> bool:
    """Whether a receive of this token is written down and not finished yet."""
    return pending_receive_of_token(conn, token_id) is not None


def pending_receive_of_token(conn: sqlite3.Connection, token_id: str) -> int | None:
    """The receive of this token written down and not finished yet, if there is one."""
    row = conn.execute(
        "SELECT id FROM operations WHERE token_id = ? AND state = 'pending'", (token_id,)
    ).fetchone()
    return int(row[0]) if row is not None else None


def account_made_by_token(conn: sqlite3.Connection, token_id: str) -> int | None:
    """The account a finished receive of this token credited, if there is one."""
    # "state != 'failed'" as the unique index on a token's live operation says it
    row = conn.execute(
        "SELECT state, result FROM operations WHERE token_id = ? AND state != 'failed'",
        (token_id,),
    ).fetchone()
    if row is None or row[0] != OperationState.DONE:
        return None
    return OperationResult.decode(row[1]).account_id


def set_quote(conn: sqlite3.Connection, op_id: int, quote_id: str) -> None:
    conn.execute("UPDATE operations SET quote_id = ? WHERE id = ?", (quote_id, op_id))


def operation(conn: sqlite3.Connection, op_id: int) -> Operation:
    row = conn.execute(
        "SELECT id, kind, mint_url, state, token_id, foreign_inputs, intent, quote_id"
        " FROM operations WHERE id = ?",
        (op_id,),
    ).fetchone()
    if row is None:
        raise KeyError(op_id)
    return _operation(row)


def operation_state(conn: sqlite3.Connection, op_id: int) -> OperationState:
    """Only the state: what a completion checks first, without decoding the rest."""
    row = conn.execute("SELECT state FROM operations WHERE id = ?", (op_id,)).fetchone()
    if row is None:
        raise KeyError(op_id)
    return OperationState(row[0])


def pending_operations(conn: sqlite3.Connection) -> list[Operation]:
    rows = conn.execute(
        "SELECT id, kind, mint_url, state, token_id, foreign_inputs, intent, quote_id"
        " FROM operations WHERE state = 'pending' ORDER BY id"
    ).fetchall()
    return [_operation(r) for r in rows]


def stale_operation_ids(conn: sqlite3.Connection, written_by: int) -> list[int]:
    """Pending swaps and melts written down at ``written_by`` or earlier (Lightning-in
    mint operations are their invoices' business)."""
    rows = conn.execute(
        "SELECT id FROM operations WHERE state = 'pending' AND kind != 'mint'"
        " AND created_at <= ? ORDER BY id",
        (written_by,),
    ).fetchall()
    return [int(r[0]) for r in rows]


def _operation(row: Any) -> Operation:
    inputs = [
        Proof(amount=int(p["amount"]), keyset_id=p["id"], secret=p["secret"], C=p["C"])
        for p in json.loads(row[5] or "[]")
    ]
    return Operation(
        row[0],
        row[2],
        OperationState(row[3]),
        decode_intent(OperationKind(row[1]), row[6]),
        row[4],
        inputs,
        row[7],
    )


def operation_outputs(conn: sqlite3.Connection, op_id: int) -> list[OutputRow]:
    rows = conn.execute(
        "SELECT role, keyset_id, amount, counter, secret, r, b_ FROM operation_outputs"
        " WHERE operation_id = ? ORDER BY idx",
        (op_id,),
    ).fetchall()
    return [
        OutputRow(
            OutputRole(r[0]),
            PreparedOutput(amount=r[2], keyset_id=r[1], counter=r[3], secret=r[4], r=r[5], B_=r[6]),
        )
        for r in rows
    ]


def finish_operation(
    conn: sqlite3.Connection,
    op_id: int,
    state: OperationState,
    *,
    result: OperationResult | None = None,
    error: str | None = None,
) -> bool:
    """Mark a pending operation done or failed; False if it was already finished."""
    cur = conn.execute(
        "UPDATE operations SET state = ?, result = ?, error = ?, finished_at = ?"
        " WHERE id = ? AND state = 'pending'",
        (state, result.encode() if result is not None else None, error, now(), op_id),
    )
    return cur.rowcount == 1


def insert_proofs(
    conn: sqlite3.Connection,
    mint_url: str,
    proofs: Sequence[StoredProof],
    *,
    state: str,
    operation_id: int | None = None,
    outgoing_token_id: int | None = None,
) -> None:
    conn.executemany(
        "INSERT INTO proofs (mint_url, keyset_id, amount, secret, c, y, state, operation_id,"
        " outgoing_token_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                mint_url,
                s.proof.keyset_id,
                s.proof.amount,
                s.proof.secret,
                s.proof.C,
                s.y,
                state,
                operation_id,
                outgoing_token_id,
                now(),
            )
            for s in proofs
        ],
    )


def selectable_coins(
    conn: sqlite3.Connection, mint_url: str, per_amount: int | None = COINS_PER_AMOUNT
) -> tuple[list[Coin], bool]:
    """The oldest ``per_amount`` unspent proofs of each amount at the mint (None: all),
    and whether some were left out.

    Hops from amount to amount on the index: reading every unspent proof cost a send
    200 ms with 50,000 of them, and custody only grows with every redeem.
    """
    if per_amount is None:
        rows = conn.execute(
            "SELECT id, amount, keyset_id FROM proofs WHERE state = 'unspent' AND mint_url = ?",
            (mint_url,),
        ).fetchall()
        return [Coin(int(r[0]), int(r[1]), str(r[2])) for r in rows], False
    amounts = conn.execute(
        "WITH RECURSIVE denomination(amount) AS ("
        " SELECT MIN(amount) FROM proofs WHERE state = 'unspent' AND mint_url = ?"
        " UNION ALL"
        " SELECT (SELECT MIN(amount) FROM proofs WHERE state = 'unspent' AND mint_url = ?"
        " AND amount > denomination.amount) FROM denomination"
        " WHERE denomination.amount IS NOT NULL)"
        " SELECT amount FROM denomination WHERE amount IS NOT NULL",
        (mint_url, mint_url),
    ).fetchall()
    coins: list[Coin] = []
    left_out = False
    for (amount,) in amounts:
        rows = conn.execute(
            "SELECT id, amount, keyset_id FROM proofs WHERE state = 'unspent' AND mint_url = ?"
            " AND amount = ? ORDER BY id LIMIT ?",
            (mint_url, amount, per_amount + 1),
        ).fetchall()
        left_out = left_out or len(rows) > per_amount
        coins.extend(Coin(int(r[0]), int(r[1]), str(r[2])) for r in rows[:per_amount])
    return coins, left_out


def held_mint_urls(conn: sqlite3.Connection) -> list[str]:
    """The mints custody holds spendable ecash at.

    Hops from mint to mint on the index (a seek per mint): DISTINCT would read an index
    entry for every unspent proof.
    """
    rows = conn.execute(
        "WITH RECURSIVE mint(url) AS ("
        " SELECT MIN(mint_url) FROM proofs WHERE state = 'unspent'"
        " UNION ALL"
        " SELECT (SELECT MIN(mint_url) FROM proofs WHERE state = 'unspent'"
        " AND mint_url > mint.url) FROM mint WHERE mint.url IS NOT NULL)"
        " SELECT url FROM mint WHERE url IS NOT NULL"
    )
    return sorted(str(r[0]) for r in rows)


def has_operations_in_flight(conn: sqlite3.Connection, mint_url: str) -> bool:
    """Whether operations at this mint are under way: what they lock or bring comes back
    to custody within moments."""
    row = conn.execute(
        "SELECT 1 FROM operations WHERE state = 'pending' AND mint_url = ? LIMIT 1", (mint_url,)
    ).fetchone()
    return row is not None


def lock_proofs(conn: sqlite3.Connection, proof_ids: Sequence[int], op_id: int) -> bool:
    """Mark proofs as inputs of an operation; False (and nothing changed) if any is taken."""
    marks = ",".join("?" * len(proof_ids))
    cur = conn.execute(
        f"UPDATE proofs SET state = 'pending', operation_id = ? WHERE id IN ({marks})"
        " AND state = 'unspent'",
        (op_id, *proof_ids),
    )
    if cur.rowcount != len(proof_ids):
        raise _Conflict()
    return True


class _Conflict(Exception):
    """Another operation took one of the selected proofs first."""


SelectionConflict = _Conflict


def operation_inputs(conn: sqlite3.Connection, op_id: int) -> list[StoredProof]:
    rows = conn.execute(
        "SELECT amount, keyset_id, secret, c, y FROM proofs WHERE operation_id = ?"
        " AND state = 'pending' ORDER BY id",
        (op_id,),
    ).fetchall()
    return [StoredProof(Proof(int(r[0]), r[1], r[2], r[3]), r[4]) for r in rows]


def proofs_by_ids(conn: sqlite3.Connection, proof_ids: Sequence[int]) -> list[StoredProof]:
    marks = ",".join("?" * len(proof_ids))
    rows = conn.execute(
        f"SELECT amount, keyset_id, secret, c, y FROM proofs WHERE id IN ({marks}) ORDER BY id",
        tuple(proof_ids),
    ).fetchall()
    return [StoredProof(Proof(int(r[0]), r[1], r[2], r[3]), r[4]) for r in rows]


def settle_inputs(conn: sqlite3.Connection, op_id: int, state: str) -> int:
    """Inputs of an operation become spent, or unspent again when it never happened."""
    cur = conn.execute(
        "UPDATE proofs SET state = ? WHERE operation_id = ? AND state = 'pending'",
        (state, op_id),
    )
    return cur.rowcount


def mark_sent(conn: sqlite3.Connection, proof_ids: Sequence[int], outgoing_token_id: int) -> None:
    marks = ",".join("?" * len(proof_ids))
    cur = conn.execute(
        f"UPDATE proofs SET state = 'sent', outgoing_token_id = ? WHERE id IN ({marks})"
        " AND state = 'unspent'",
        (outgoing_token_id, *proof_ids),
    )
    if cur.rowcount != len(proof_ids):
        raise _Conflict()


def operation_result(conn: sqlite3.Connection, op_id: int) -> OperationResult:
    """What a finished operation recorded as its result (nothing: all None)."""
    row = conn.execute("SELECT result FROM operations WHERE id = ?", (op_id,)).fetchone()
    return OperationResult.decode(row[0] if row else None)


def operation_token(conn: sqlite3.Connection, op_id: int) -> str:
    """The token a finished send operation produced ("" if it produced none)."""
    row = conn.execute(
        "SELECT t.token FROM operations o JOIN outgoing_tokens t"
        " ON t.id = json_extract(o.result, '$.outgoing_token_id') WHERE o.id = ?",
        (op_id,),
    ).fetchone()
    return str(row[0]) if row else ""
