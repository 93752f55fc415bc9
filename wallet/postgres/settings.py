"""The node's settings row and the audit's snapshot, for PostgreSQL."""

from __future__ import annotations

from wallet.postgres.ledger import Conn, now
from wallet.records import NO_SETTINGS, LedgerSnapshot, PasswordOrigin, StoredSettings


async def load_settings(c: Conn) -> StoredSettings:
    row = await c.fetchrow(
        "SELECT overrides, admin_password_hash, admin_password_origin FROM node_settings"
    )
    if row is None:
        return NO_SETTINGS
    return StoredSettings(row[0], row[1], row[2])


async def save_settings(
    c: Conn, overrides: str | None, password_hash: str | None, origin: PasswordOrigin
) -> None:
    await c.execute(
        "INSERT INTO node_settings (id, updated_at) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
        now(),
    )
    if overrides is not None:
        await c.execute(
            "UPDATE node_settings SET overrides = $1, updated_at = $2 WHERE id = 1",
            overrides,
            now(),
        )
    if password_hash is not None:
        await c.execute(
            "UPDATE node_settings SET admin_password_hash = $1, admin_password_origin = $2,"
            " updated_at = $3 WHERE id = 1",
            password_hash,
            origin,
            now(),
        )
    # every process hears of the change at once (each also reads it again every few s)
    await c.execute("SELECT pg_notify('routstr_settings', '')")


async def audit_snapshot(c: Conn) -> LedgerSnapshot:
    unspent: dict[str, list[tuple[str, int]]] = {}
    for mint_url, y, amount in await c.fetch(
        "SELECT mint_url, y, amount FROM proofs WHERE state = 'unspent'"
    ):
        unspent.setdefault(mint_url, []).append((y, int(amount)))
    in_flight = await c.fetchval(
        "SELECT COALESCE(SUM(amount), 0) FROM proofs WHERE state = 'pending'"
    )
    balances, unclaimed = await c.fetchrow(
        "SELECT COALESCE(SUM(CASE WHEN kind != 'xcashu' THEN balance_msat END), 0),"
        " COALESCE(SUM(CASE WHEN kind = 'xcashu' THEN balance_msat END), 0) FROM accounts"
    )
    reserved = await c.fetchval("SELECT COALESCE(SUM(reserved_msat), 0) FROM accounts")
    earnings = await c.fetchval("SELECT amount_msat FROM earnings WHERE id = 1")
    journal = await c.fetchrow(
        "SELECT COALESCE(SUM(custody_delta_msat), 0), COALESCE(SUM(balance_delta_msat), 0),"
        " COALESCE(SUM(reserved_delta_msat), 0), COALESCE(SUM(earnings_delta_msat), 0)"
        " FROM journal"
    )
    pending = await c.fetchval("SELECT COUNT(*) FROM operations WHERE state = 'pending'")
    j = tuple(int(x) for x in journal)
    return LedgerSnapshot(
        unspent,
        int(in_flight),
        int(balances),
        int(reserved),
        int(unclaimed),
        int(earnings),
        (j[0], j[1], j[2], j[3]),
        int(pending),
    )
