"""Payouts, the books and node-wide leases, for PostgreSQL (as :mod:`wallet.sqlite.payouts`
and :mod:`wallet.sqlite.books`): earnings held by one conditional UPDATE, so payouts from
several processes never hold the same earnings, and a payout closed under its row lock."""

from __future__ import annotations

from typing import Any

import asyncpg

from wallet.errors import InsufficientEarnings, PayoutKeyTaken
from wallet.payout_records import (
    PAYOUT_PURPOSE,
    Books,
    MintBooks,
    PayoutKind,
    PayoutOutcome,
    PayoutRow,
    PayoutState,
    payout_closing,
)
from wallet.postgres.custody import outgoing_tokens
from wallet.postgres.ledger import Conn, create_account, journal, now

_COLUMNS = (
    "id, kind, idempotency_key, account_id, mint_url, held_msat, asked_sat, destination,"
    " state, amount_sat, fee_sat, token, error_code, error, created_at, finished_at"
)


def _payout(row: Any) -> PayoutRow:
    def opt(value: Any) -> int | None:
        return None if value is None else int(value)

    return PayoutRow(
        int(row[0]), PayoutKind(row[1]), row[2], int(row[3]), row[4], int(row[5]), opt(row[6]),
        row[7], PayoutState(row[8]), opt(row[9]), opt(row[10]), row[11], row[12], row[13],
        int(row[14]), opt(row[15]),
    )  # fmt: skip


async def hold_for_payout(
    c: Conn,
    kind: PayoutKind,
    mint_url: str,
    hold_msat: int,
    idempotency_key: str | None,
    asked_sat: int | None,
    destination: str | None,
) -> PayoutRow:
    left = await c.fetchval(
        "UPDATE earnings SET amount_msat = amount_msat - $1 WHERE id = 1 AND amount_msat >= $1"
        " RETURNING amount_msat",
        hold_msat,
    )
    if left is None:
        have = int(await c.fetchval("SELECT amount_msat FROM earnings WHERE id = 1"))
        raise InsufficientEarnings(
            f"earnings are {have // 1000} sat, less than the {hold_msat // 1000} sat this needs",
            available_msat=have,
        )
    account_id = await create_account(c, "key", mint_url=mint_url)
    await c.execute("UPDATE accounts SET balance_msat = $1 WHERE id = $2", hold_msat, account_id)
    await journal(
        c, "payout_hold", account_id=account_id, balance=hold_msat, earnings=-hold_msat,
        memo=str(kind),
    )  # fmt: skip
    try:
        async with c.transaction():
            payout_id = await c.fetchval(
                "INSERT INTO payouts (kind, idempotency_key, account_id, mint_url, held_msat,"
                " asked_sat, destination, state, created_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8) RETURNING id",
                str(kind), idempotency_key, account_id, mint_url, hold_msat, asked_sat,
                destination, now(),
            )  # fmt: skip
    except asyncpg.UniqueViolationError:
        raise PayoutKeyTaken("a payout with this idempotency key exists") from None
    return await payout(c, int(payout_id))


async def payout(c: Conn, payout_id: int, *, lock: bool = False) -> PayoutRow:
    suffix = " FOR UPDATE" if lock else ""
    row = await c.fetchrow(f"SELECT {_COLUMNS} FROM payouts WHERE id = $1{suffix}", payout_id)
    return _payout(row)


async def payout_by_key(c: Conn, key: str) -> PayoutRow | None:
    row = await c.fetchrow(f"SELECT {_COLUMNS} FROM payouts WHERE idempotency_key = $1", key)
    return _payout(row) if row else None


async def recent_payouts(c: Conn, limit: int) -> list[PayoutRow]:
    rows = await c.fetch(f"SELECT {_COLUMNS} FROM payouts ORDER BY id DESC LIMIT $1", limit)
    return [_payout(r) for r in rows]


async def open_payouts(c: Conn, created_before: int) -> list[PayoutRow]:
    rows = await c.fetch(
        f"SELECT {_COLUMNS} FROM payouts WHERE state = 'pending' AND created_at <= $1 ORDER BY id",
        created_before,
    )
    return [_payout(r) for r in rows]


async def _outcome(c: Conn, row: PayoutRow) -> PayoutOutcome:
    balance, reserved = await c.fetchrow(
        "SELECT balance_msat, reserved_msat FROM accounts WHERE id = $1 FOR UPDATE",
        row.account_id,
    )
    spent = row.held_msat - int(balance) - int(reserved)
    tokens = await outgoing_tokens(c, row.account_id, PAYOUT_PURPOSE)
    return PayoutOutcome(int(reserved) > 0, spent, tokens[-1] if tokens else None)


async def settle_payout(c: Conn, payout_id: int, error: tuple[str, str] | None) -> PayoutRow:
    current = await payout(c, payout_id, lock=True)
    if current.state is not PayoutState.PENDING:
        return current
    closing = payout_closing(current, await _outcome(c, current), error)
    if closing is None:
        return current
    balance = int(
        await c.fetchval("SELECT balance_msat FROM accounts WHERE id = $1", current.account_id)
    )
    if balance:
        await c.execute("UPDATE accounts SET balance_msat = 0 WHERE id = $1", current.account_id)
        await c.execute("UPDATE earnings SET amount_msat = amount_msat + $1 WHERE id = 1", balance)
        await journal(
            c, "payout_return", account_id=current.account_id, balance=-balance,
            earnings=balance, memo=str(closing.state),
        )  # fmt: skip
    await c.execute(
        "UPDATE payouts SET state = $1, amount_sat = $2, fee_sat = $3, token = $4,"
        " error_code = $5, error = $6, finished_at = $7 WHERE id = $8",
        str(closing.state), closing.amount_sat, closing.fee_sat, closing.token,
        closing.error_code, (closing.error or "")[:500] or None, now(), payout_id,
    )  # fmt: skip
    return await payout(c, payout_id)


async def take_lease(c: Conn, name: str, holder: str, ttl_s: int) -> bool:
    at = now()
    await c.execute(
        "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3)"
        " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,"
        " expires_at = excluded.expires_at"
        " WHERE leases.holder = excluded.holder OR leases.expires_at < $4",
        name, holder, at + ttl_s, at,
    )  # fmt: skip
    return bool(await c.fetchval("SELECT holder FROM leases WHERE name = $1", name) == holder)


async def books(c: Conn, mint_urls: list[str]) -> Books:
    primary = mint_urls[0] if mint_urls else ""
    unspent: dict[str, int] = {}
    pending: dict[str, int] = {}
    for url, unspent_sat, pending_sat in await c.fetch(
        "SELECT mint_url, COALESCE(SUM(CASE WHEN state = 'unspent' THEN amount END), 0),"
        " COALESCE(SUM(CASE WHEN state = 'pending' THEN amount END), 0)"
        " FROM proofs WHERE state IN ('unspent', 'pending') GROUP BY mint_url"
    ):
        unspent[url] = int(unspent_sat) * 1000
        pending[url] = int(pending_sat) * 1000
    owed: dict[str, int] = {}
    in_payout: dict[str, int] = {}
    for url, is_payout, msat in await c.fetch(
        "SELECT COALESCE(a.mint_url, $1), p.id IS NOT NULL,"
        " SUM(a.balance_msat + a.reserved_msat) FROM accounts a"
        " LEFT JOIN payouts p ON p.account_id = a.id"
        " WHERE a.balance_msat > 0 OR a.reserved_msat > 0 GROUP BY 1, 2",
        primary,
    ):
        target = in_payout if is_payout else owed
        target[url] = target.get(url, 0) + int(msat)
    earnings = int(await c.fetchval("SELECT amount_msat FROM earnings WHERE id = 1"))
    urls = list(dict.fromkeys([*mint_urls, *unspent, *pending, *owed, *in_payout]))
    out: list[MintBooks] = []
    for url in urls:
        custody = unspent.get(url, 0) + pending.get(url, 0)
        liabilities, held = owed.get(url, 0), in_payout.get(url, 0)
        free = unspent.get(url, 0) - liabilities - held
        withdrawable = max(0, min(free, earnings)) // 1000 * 1000
        out.append(
            MintBooks(
                url,
                custody,
                unspent.get(url, 0),
                liabilities,
                held,
                custody - liabilities - held,
                withdrawable,
            )
        )
    return Books(out, earnings)
