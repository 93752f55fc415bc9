"""Ledger statements for PostgreSQL: accounts, reservations, charges and the journal.

The same rules as :mod:`wallet.sqlite.ledger`, for many processes at once: every change
of a balance is one conditional UPDATE (its row lock orders concurrent ones, and the
condition is checked again after the wait), so no balance goes negative and no
reservation settles twice, whichever process asks.
"""

from __future__ import annotations

import json
import time
from typing import Any

from wallet.errors import AccountNotFound, InsufficientBalance, InvalidAmount
from wallet.records import AccountRow, ChargedRequest, RequestTag, Settlement

Conn = Any  # asyncpg.Connection (the driver ships no types)

MAX_MSAT = 2**62
_ACCOUNT = "id, kind, balance_msat, reserved_msat, mint_url, token_id"


def now() -> int:
    return int(time.time())


def _positive(amount_msat: int) -> None:
    if type(amount_msat) is not int or not 0 <= amount_msat <= MAX_MSAT:
        raise InvalidAmount(f"amount must be an integer msat in [0, 2^62], got {amount_msat!r}")


def account_row(row: Any) -> AccountRow:
    return AccountRow(int(row[0]), str(row[1]), int(row[2]), int(row[3]), row[4], row[5])


async def journal(
    conn: Conn,
    kind: str,
    *,
    account_id: int | None = None,
    reservation_id: int | None = None,
    operation_id: int | None = None,
    custody: int = 0,
    balance: int = 0,
    reserved: int = 0,
    earnings: int = 0,
    memo: str | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO journal (at, kind, account_id, reservation_id, operation_id,"
        " custody_delta_msat, balance_delta_msat, reserved_delta_msat, earnings_delta_msat,"
        " memo) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        now(), kind, account_id, reservation_id, operation_id,
        custody, balance, reserved, earnings, memo,
    )  # fmt: skip


async def create_account(
    conn: Conn,
    kind: str,
    *,
    key_hash: str | None = None,
    admin_key_hash: str | None = None,
    token_id: str | None = None,
    mint_url: str | None = None,
) -> int:
    """A new account (made after the mint swapped its money: it must not fail, so an
    admin key taken meanwhile is left out)."""
    if admin_key_hash is not None and await find_account(conn, "admin_key_hash", admin_key_hash):
        admin_key_hash = None
    return int(
        await conn.fetchval(
            "INSERT INTO accounts (kind, key_hash, admin_key_hash, token_id, mint_url,"
            " created_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            kind, key_hash, admin_key_hash, token_id, mint_url, now(),
        )
    )  # fmt: skip


async def get_account(conn: Conn, account_id: int) -> AccountRow:
    row = await conn.fetchrow(f"SELECT {_ACCOUNT} FROM accounts WHERE id = $1", account_id)
    if row is None:
        raise AccountNotFound(f"no account {account_id}")
    return account_row(row)


async def find_account(conn: Conn, column: str, value: str) -> AccountRow | None:
    if column not in ("key_hash", "admin_key_hash", "token_id"):
        raise ValueError(column)
    row = await conn.fetchrow(f"SELECT {_ACCOUNT} FROM accounts WHERE {column} = $1", value)
    return account_row(row) if row else None


async def give_keys(conn: Conn, account_id: int, key_hash: str, admin_key_hash: str) -> bool:
    status = await conn.execute(
        "UPDATE accounts SET key_hash = $1, admin_key_hash = $2"
        " WHERE id = $3 AND key_hash IS NULL AND admin_key_hash IS NULL",
        key_hash, admin_key_hash, account_id,
    )  # fmt: skip
    return _count(status) == 1


async def reissue_keys_if_untouched(
    conn: Conn,
    account_id: int,
    created_by: int,
    key_hash: str,
    admin_key_hash: str,
    created_since: int,
) -> AccountRow | None:
    row = await conn.fetchrow(
        "SELECT j.operation_id FROM accounts a JOIN journal j ON j.id = a.last_journal_id"
        " WHERE a.id = $1 AND a.kind = 'key' AND a.reserved_msat = 0 AND a.created_at >= $2"
        " FOR UPDATE OF a",
        account_id, created_since,
    )  # fmt: skip
    if row is None or row[0] != created_by:
        return None
    await conn.execute(
        "UPDATE accounts SET key_hash = $1, admin_key_hash = $2 WHERE id = $3",
        key_hash, admin_key_hash, account_id,
    )  # fmt: skip
    return await get_account(conn, account_id)


async def mark_keys_used(conn: Conn, account_id: int) -> None:
    await conn.execute(
        "UPDATE accounts SET keys_used_at = $1 WHERE id = $2 AND keys_used_at IS NULL",
        now(), account_id,
    )  # fmt: skip


async def account_with_unused_keys(
    conn: Conn, account_id: int, key_hash: str, admin_key_hash: str
) -> AccountRow | None:
    row = await conn.fetchrow(
        f"SELECT {_ACCOUNT} FROM accounts WHERE id = $1 AND kind = 'key'"
        " AND keys_used_at IS NULL AND key_hash = $2 AND admin_key_hash = $3",
        account_id, key_hash, admin_key_hash,
    )  # fmt: skip
    return account_row(row) if row else None


async def reserve_if_untouched(
    conn: Conn, account_id: int, amount_msat: int, purpose: str
) -> int | None:
    row = await conn.fetchrow(
        "SELECT j.kind FROM accounts a JOIN journal j ON j.id = a.last_journal_id"
        " WHERE a.id = $1 AND a.kind = 'xcashu' AND a.reserved_msat = 0 FOR UPDATE OF a",
        account_id,
    )
    if row is None or row[0] != "credit":
        return None
    return await reserve(conn, account_id, amount_msat, purpose)


async def set_key_hash(conn: Conn, account_id: int, key_hash: str) -> bool:
    status = await conn.execute(
        "UPDATE accounts SET key_hash = $1 WHERE id = $2", key_hash, account_id
    )
    return _count(status) == 1


async def account_of_token(
    conn: Conn, token_id: str, signatures: frozenset[tuple[str, str]]
) -> AccountRow | None:
    account = await find_account(conn, "token_id", token_id)
    if account is None:
        return None
    row = await conn.fetchrow(
        "SELECT state, foreign_inputs FROM operations WHERE token_id = $1 AND state != 'failed'",
        token_id,
    )
    if row is None or row[0] != "done" or row[1] is None:
        return None
    redeemed = frozenset((p["secret"], str(p["C"]).lower()) for p in json.loads(row[1]))
    return account if redeemed == signatures else None


async def credit_from_custody(
    conn: Conn,
    account_id: int,
    amount_msat: int,
    *,
    operation_id: int | None,
    kind: str = "credit",
) -> None:
    _positive(amount_msat)
    status = await conn.execute(
        "UPDATE accounts SET balance_msat = balance_msat + $1 WHERE id = $2",
        amount_msat, account_id,
    )  # fmt: skip
    if _count(status) != 1:
        raise AccountNotFound(f"no account {account_id}")
    await journal(
        conn, kind, account_id=account_id, operation_id=operation_id,
        custody=amount_msat, balance=amount_msat,
    )  # fmt: skip


async def reserve(conn: Conn, account_id: int, amount_msat: int, purpose: str) -> int:
    """Hold ``amount_msat`` of the balance; one conditional update, never negative."""
    _positive(amount_msat)
    status = await conn.execute(
        "UPDATE accounts SET balance_msat = balance_msat - $1,"
        " reserved_msat = reserved_msat + $1 WHERE id = $2 AND balance_msat >= $1",
        amount_msat, account_id,
    )  # fmt: skip
    if _count(status) != 1:
        account = await get_account(conn, account_id)
        raise InsufficientBalance(
            f"needs {amount_msat} msat, the account has {account.balance_msat} msat available",
            needed_msat=amount_msat,
            available_msat=account.balance_msat,
        )
    reservation_id = int(
        await conn.fetchval(
            "INSERT INTO reservations (account_id, amount_msat, state, purpose, created_at)"
            " VALUES ($1, $2, 'open', $3, $4) RETURNING id",
            account_id, amount_msat, purpose, now(),
        )
    )  # fmt: skip
    await journal(
        conn, "reserve", account_id=account_id, reservation_id=reservation_id,
        balance=-amount_msat, reserved=amount_msat, memo=purpose,
    )  # fmt: skip
    return reservation_id


async def settle(
    conn: Conn,
    reservation_id: int,
    charge_msat: int,
    *,
    destination: str = "earnings",
    operation_id: int | None = None,
    tag: RequestTag | None = None,
) -> Settlement:
    """Charge at most the reservation and release the rest, exactly once (a second call
    changes nothing and returns the first outcome); ``tag`` names the request."""
    _positive(charge_msat)
    if destination not in ("earnings", "out"):
        raise ValueError(destination)
    row = await conn.fetchrow(
        "UPDATE reservations SET state = CASE WHEN $1::bigint > 0 THEN 'charged'"
        " ELSE 'released' END, charged_msat = LEAST($1::bigint, amount_msat), settled_at = $2,"
        " request_id = COALESCE($4, request_id), request_route = COALESCE($5, request_route),"
        " request_model = COALESCE($6, request_model),"
        " request_provider = CASE WHEN $4::text IS NULL THEN request_provider ELSE $7 END"
        " WHERE id = $3 AND state = 'open'"
        " RETURNING account_id, amount_msat, charged_msat, state",
        charge_msat, now(), reservation_id,
        *((tag.request_id, tag.route, tag.model, tag.provider) if tag else (None,) * 4),
    )  # fmt: skip
    if row is None:
        return await reservation_state(conn, reservation_id)
    settled = Settlement(reservation_id, int(row[0]), int(row[1]), int(row[2]), str(row[3]))
    account_id, amount, charged = settled.account_id, settled.reserved_msat, settled.charged_msat
    returned = amount - charged
    await conn.execute(
        "UPDATE accounts SET reserved_msat = reserved_msat - $1,"
        " balance_msat = balance_msat + $2 WHERE id = $3",
        amount, returned, account_id,
    )  # fmt: skip
    if destination == "earnings" and charged:
        await conn.execute(
            "UPDATE earnings SET amount_msat = amount_msat + $1 WHERE id = 1", charged
        )
    await journal(
        conn,
        "charge" if charged else "release",
        account_id=account_id,
        reservation_id=reservation_id,
        operation_id=operation_id,
        custody=-charged if destination == "out" else 0,
        balance=returned,
        reserved=-amount,
        earnings=charged if destination == "earnings" else 0,
        memo=destination,
    )
    return settled


async def reservation_state(conn: Conn, reservation_id: int) -> Settlement:
    row = await conn.fetchrow(
        "SELECT account_id, amount_msat, COALESCE(charged_msat, 0), state"
        " FROM reservations WHERE id = $1",
        reservation_id,
    )
    if row is None:
        raise AccountNotFound(f"no reservation {reservation_id}")
    return Settlement(reservation_id, int(row[0]), int(row[1]), int(row[2]), str(row[3]))


async def record_delivered(
    conn: Conn, reservation_id: int, delivered_msat: int, tag: RequestTag | None
) -> None:
    """What an open request has delivered so far (capped at its reservation), and the
    request it is."""
    _positive(delivered_msat)
    await conn.execute(
        "UPDATE reservations SET delivered_msat ="
        " GREATEST(delivered_msat, LEAST($1::bigint, amount_msat)),"
        " request_id = COALESCE($3, request_id), request_route = COALESCE($4, request_route),"
        " request_model = COALESCE($5, request_model),"
        " request_provider = CASE WHEN $3::text IS NULL THEN request_provider ELSE $6 END"
        " WHERE id = $2 AND state = 'open'",
        delivered_msat, reservation_id,
        *((tag.request_id, tag.route, tag.model, tag.provider) if tag else (None,) * 4),
    )  # fmt: skip


async def charged_requests_after(
    conn: Conn, after_reservation_id: int, settled_since: int, limit: int
) -> list[ChargedRequest]:
    rows = await conn.fetch(
        "SELECT r.id, r.request_id, r.request_route, r.request_model, r.request_provider,"
        " r.account_id, a.kind, r.charged_msat, r.settled_at"
        " FROM reservations r JOIN accounts a ON a.id = r.account_id"
        " WHERE r.id > $1 AND r.state = 'charged' AND r.request_id IS NOT NULL"
        " AND r.settled_at >= $2 ORDER BY r.id LIMIT $3",
        after_reservation_id, settled_since, limit,
    )  # fmt: skip
    return [
        ChargedRequest(
            int(r[0]),
            RequestTag(str(r[1]), str(r[2] or ""), str(r[3] or ""), r[4]),
            int(r[5]),
            str(r[6]),
            int(r[7]),
            int(r[8]),
        )
        for r in rows
    ]


async def debit_to_earnings(
    conn: Conn, account_id: int, amount_msat: int, *, kind: str, memo: str = ""
) -> None:
    _positive(amount_msat)
    if amount_msat == 0:
        return
    status = await conn.execute(
        "UPDATE accounts SET balance_msat = balance_msat - $1"
        " WHERE id = $2 AND balance_msat >= $1",
        amount_msat, account_id,
    )  # fmt: skip
    if _count(status) != 1:
        raise InsufficientBalance("balance too small", needed_msat=amount_msat)
    await conn.execute(
        "UPDATE earnings SET amount_msat = amount_msat + $1 WHERE id = 1", amount_msat
    )
    await journal(
        conn, kind, account_id=account_id, balance=-amount_msat, earnings=amount_msat,
        memo=memo or None,
    )  # fmt: skip


def _count(status: str) -> int:
    """The row count of a command's status ("UPDATE 1")."""
    return int(status.rsplit(" ", 1)[-1])
