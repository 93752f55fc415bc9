"""What the audit reads from the database: custody, totals and the journal's sums."""

from __future__ import annotations

import sqlite3

from wallet.records import LedgerSnapshot


def snapshot(c: sqlite3.Connection) -> LedgerSnapshot:
    unspent: dict[str, list[tuple[str, int]]] = {}
    for mint_url, y, amount in c.execute(
        "SELECT mint_url, y, amount FROM proofs WHERE state = 'unspent'"
    ):
        unspent.setdefault(mint_url, []).append((y, int(amount)))
    in_flight = c.execute(
        "SELECT COALESCE(SUM(amount), 0) FROM proofs WHERE state = 'pending'"
    ).fetchone()[0]
    balances, unclaimed = c.execute(
        "SELECT COALESCE(SUM(CASE WHEN kind != 'xcashu' THEN balance_msat END), 0),"
        " COALESCE(SUM(CASE WHEN kind = 'xcashu' THEN balance_msat END), 0) FROM accounts"
    ).fetchone()
    reserved = c.execute("SELECT COALESCE(SUM(reserved_msat), 0) FROM accounts").fetchone()[0]
    earnings = c.execute("SELECT amount_msat FROM earnings WHERE id = 1").fetchone()[0]
    journal = c.execute(
        "SELECT COALESCE(SUM(custody_delta_msat), 0), COALESCE(SUM(balance_delta_msat), 0),"
        " COALESCE(SUM(reserved_delta_msat), 0), COALESCE(SUM(earnings_delta_msat), 0)"
        " FROM journal"
    ).fetchone()
    pending = c.execute("SELECT COUNT(*) FROM operations WHERE state = 'pending'").fetchone()[0]
    return LedgerSnapshot(
        unspent,
        int(in_flight),
        int(balances),
        int(reserved),
        int(unclaimed),
        int(earnings),
        tuple(int(x) for x in journal),  # type: ignore[arg-type]
        int(pending),
    )
