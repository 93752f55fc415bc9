"""Payout transactions: earnings held for a payout and given back, and leases for
node-wide jobs.

A payout never touches custody itself: it moves what it may spend from earnings to an
account of its own (no key opens it), custody pays from that account like any
withdrawal, and closing the payout gives back to earnings what that account still holds.
"""

from __future__ import annotations

import sqlite3

from wallet.errors import InsufficientEarnings, PayoutKeyTaken
from wallet.payout_records import (
    PAYOUT_PURPOSE,
    PayoutKind,
    PayoutOutcome,
    PayoutRow,
    PayoutState,
    payout_closing,
)
from wallet.sqlite.ledger import create_account, journal, now
from wallet.sqlite.outgoing import outgoing_tokens

_PAYOUT_COLUMNS = (
    "id, kind, idempotency_key, account_id, mint_url, held_msat, asked_sat, destination,"
    " state, amount_sat, fee_sat, token, error_code, error, created_at, finished_at"
)


def _payout(row: tuple[object, ...]) -> PayoutRow:
    values = list(row)
    values[1] = PayoutKind(str(values[1]))
    values[8] = PayoutState(str(values[8]))
    return PayoutRow(*values)  # type: ignore[arg-type]


def hold_for_payout(
    c: sqlite3.Connection,
    *,
    kind: PayoutKind,
    mint_url: str,
    hold_msat: int,
    idempotency_key: str | None,
    asked_sat: int | None,
    destination: str | None,
) -> PayoutRow:
    """One transaction: move ``hold_msat`` from earnings to the payout's own account,
    with one conditional update, and write the payout down. Concurrent payouts and
    client traffic go through it one at a time: two payouts never hold the same
    earnings, and earnings never go below zero."""
    cur = c.execute(
        "UPDATE earnings SET amount_msat = amount_msat - ? WHERE id = 1 AND amount_msat >= ?",
        (hold_msat, hold_msat),
    )
    if cur.rowcount != 1:
        left = int(c.execute("SELECT amount_msat FROM earnings WHERE id = 1").fetchone()[0])
        raise InsufficientEarnings(
            f"earnings are {left // 1000} sat, less than the {hold_msat // 1000} sat this needs",
            available_msat=left,
        )
    account_id = create_account(c, "key", mint_url=mint_url)
    c.execute("UPDATE accounts SET balance_msat = ? WHERE id = ?", (hold_msat, account_id))
    journal(
        c, "payout_hold", account_id=account_id, balance=hold_msat, earnings=-hold_msat, memo=kind
    )
    try:
        cur = c.execute(
            "INSERT INTO payouts (kind, idempotency_key, account_id, mint_url, held_msat,"
            " asked_sat, destination, state, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?)",
            (kind, idempotency_key, account_id, mint_url, hold_msat, asked_sat, destination, now()),
        )
    except sqlite3.IntegrityError:
        raise PayoutKeyTaken("a payout with this idempotency key exists") from None
    assert cur.lastrowid is not None
    return payout(c, cur.lastrowid)


def payout(c: sqlite3.Connection, payout_id: int) -> PayoutRow:
    row = c.execute(f"SELECT {_PAYOUT_COLUMNS} FROM payouts WHERE id = ?", (payout_id,)).fetchone()
    return _payout(row)


def payout_by_key(c: sqlite3.Connection, key: str) -> PayoutRow | None:
    row = c.execute(
        f"SELECT {_PAYOUT_COLUMNS} FROM payouts WHERE idempotency_key = ?", (key,)
    ).fetchone()
    return _payout(row) if row else None


def recent_payouts(c: sqlite3.Connection, limit: int) -> list[PayoutRow]:
    rows = c.execute(f"SELECT {_PAYOUT_COLUMNS} FROM payouts ORDER BY id DESC LIMIT ?", (limit,))
    return [_payout(r) for r in rows]


def open_payouts(c: sqlite3.Connection, created_before: int) -> list[PayoutRow]:
    rows = c.execute(
        f"SELECT {_PAYOUT_COLUMNS} FROM payouts WHERE state = 'pending' AND created_at <= ?"
        " ORDER BY id",
        (created_before,),
    )
    return [_payout(r) for r in rows]


def outcome(c: sqlite3.Connection, row: PayoutRow) -> PayoutOutcome:
    """Only custody's sends and melts take from a payout's account: what left it is what
    they spent (read by primary key and the outgoing tokens' index, no history scan)."""
    balance, reserved = c.execute(
        "SELECT balance_msat, reserved_msat FROM accounts WHERE id = ?", (row.account_id,)
    ).fetchone()
    spent = row.held_msat - int(balance) - int(reserved)
    tokens = outgoing_tokens(c, row.account_id, PAYOUT_PURPOSE)
    return PayoutOutcome(int(reserved) > 0, spent, tokens[-1] if tokens else None)


def close_payout(
    c: sqlite3.Connection,
    payout_id: int,
    state: PayoutState,
    *,
    amount_sat: int | None = None,
    fee_sat: int | None = None,
    token: str | None = None,
    error_code: str | None = None,
    error: str | None = None,
) -> PayoutRow:
    """Close a pending payout once custody is done with its account: what the account
    still holds goes back to earnings, in the same transaction. Closed already (another
    task got there first): unchanged."""
    row = payout(c, payout_id)
    if row.state is not PayoutState.PENDING:
        return row
    balance, reserved = c.execute(
        "SELECT balance_msat, reserved_msat FROM accounts WHERE id = ?", (row.account_id,)
    ).fetchone()
    if reserved:
        raise RuntimeError(f"payout {payout_id}: its account has an operation in flight")
    if balance:
        c.execute("UPDATE accounts SET balance_msat = 0 WHERE id = ?", (row.account_id,))
        c.execute("UPDATE earnings SET amount_msat = amount_msat + ? WHERE id = 1", (int(balance),))
        journal(
            c,
            "payout_return",
            account_id=row.account_id,
            balance=-int(balance),
            earnings=int(balance),
            memo=state,
        )
    c.execute(
        "UPDATE payouts SET state = ?, amount_sat = ?, fee_sat = ?, token = ?, error_code = ?,"
        " error = ?, finished_at = ? WHERE id = ?",
        (
            state,
            amount_sat,
            fee_sat,
            token,
            error_code,
            (error or "")[:500] or None,
            now(),
            payout_id,
        ),
    )
    return payout(c, payout_id)


def take_lease(c: sqlite3.Connection, name: str, holder: str, ttl_s: int) -> bool:
    """Whether ``holder`` holds the lease ``name`` now (taken, renewed, or taken over
    from a holder whose lease ran out). Plain SQL that PostgreSQL runs as well."""
    at = now()
    c.execute(
        "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?)"
        " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,"
        " expires_at = excluded.expires_at"
        " WHERE leases.holder = excluded.holder OR leases.expires_at < ?",
        (name, holder, at + ttl_s, at),
    )
    row = c.execute("SELECT holder FROM leases WHERE name = ?", (name,)).fetchone()
    return row is not None and row[0] == holder


def settle_payout(
    c: sqlite3.Connection, payout_id: int, error: tuple[str, str] | None
) -> PayoutRow:
    """Close the payout from what custody did with its account (pending while busy)."""
    current = payout(c, payout_id)
    if current.state is not PayoutState.PENDING:
        return current
    closing = payout_closing(current, outcome(c, current), error)
    if closing is None:
        return current
    return close_payout(
        c,
        payout_id,
        closing.state,
        amount_sat=closing.amount_sat,
        fee_sat=closing.fee_sat,
        token=closing.token,
        error_code=closing.error_code,
        error=closing.error,
    )
