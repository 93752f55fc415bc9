"""Outgoing tokens: what left custody as a token (withdrawals, refunds, change)."""

from __future__ import annotations

import sqlite3

from wallet.records import WITHDRAWN, RefundRow, Withdrawal
from wallet.sqlite.ledger import now


def insert_outgoing_token(
    conn: sqlite3.Connection,
    account_id: int | None,
    purpose: str,
    mint_url: str,
    amount_sat: int,
    token: str,
) -> int:
    cur = conn.execute(
        "INSERT INTO outgoing_tokens (account_id, purpose, mint_url, amount_sat, token, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (account_id, purpose, mint_url, amount_sat, token, now()),
    )
    assert cur.lastrowid is not None
    return cur.lastrowid


def outgoing_tokens(
    conn: sqlite3.Connection, account_id: int, purpose: str
) -> list[tuple[str, int]]:
    rows = conn.execute(
        "SELECT token, amount_sat FROM outgoing_tokens WHERE account_id = ? AND purpose = ?"
        " ORDER BY id",
        (account_id, purpose),
    ).fetchall()
    return [(str(r[0]), int(r[1])) for r in rows]


def withdrawals(conn: sqlite3.Connection, account_id: int, limit: int) -> list[Withdrawal]:
    """An account's latest tokens taken out, newest first."""
    rows = conn.execute(
        "SELECT token, amount_sat, mint_url, created_at FROM outgoing_tokens"
        f" WHERE account_id = ? AND purpose IN ({', '.join('?' * len(WITHDRAWN))})"
        " ORDER BY id DESC LIMIT ?",
        (account_id, *WITHDRAWN, limit),
    ).fetchall()
    return [Withdrawal(str(r[0]), int(r[1]), str(r[2]), int(r[3])) for r in rows]


def last_refund_if_untouched(conn: sqlite3.Connection, account_id: int) -> RefundRow | None:
    """The account's last refund token, if nothing happened on the account since: no
    balance left or reserved, and the refund's charge is its latest journal entry."""
    account = conn.execute(
        "SELECT balance_msat, reserved_msat FROM accounts WHERE id = ?", (account_id,)
    ).fetchone()
    if account is None or account[0] >= 1000 or account[1] != 0:
        return None
    last = conn.execute(
        "SELECT j.kind, r.purpose FROM accounts a"
        " JOIN journal j ON j.id = a.last_journal_id"
        " LEFT JOIN reservations r ON r.id = j.reservation_id"
        " WHERE a.id = ?",
        (account_id,),
    ).fetchone()
    if last is None or tuple(last) != ("charge", "refund"):
        return None
    token = conn.execute(
        "SELECT id, token, amount_sat, mint_url FROM outgoing_tokens"
        " WHERE account_id = ? AND purpose = 'refund' ORDER BY id DESC LIMIT 1",
        (account_id,),
    ).fetchone()
    if token is None:
        return None
    ys = [
        str(r[0])
        for r in conn.execute("SELECT y FROM proofs WHERE outgoing_token_id = ?", (token[0],))
    ]
    return RefundRow(str(token[1]), int(token[2]), str(token[3]), ys)
