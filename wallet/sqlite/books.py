"""The operator's books per mint: custody, what clients are owed, and the node's part.

Read by the operator (the admin API, the command line) and before a payout, never on a
client's request: it sums every unspent proof and every account with money.
"""

from __future__ import annotations

import sqlite3

from wallet.payout_records import Books, MintBooks


def books(c: sqlite3.Connection, mint_urls: list[str]) -> Books:
    """The books per mint: ``mint_urls`` (trusted, primary first) and every other mint
    custody or an account still names."""
    primary = mint_urls[0] if mint_urls else ""
    unspent: dict[str, int] = {}
    pending: dict[str, int] = {}
    for url, unspent_sat, pending_sat in c.execute(
        "SELECT mint_url, COALESCE(SUM(CASE WHEN state = 'unspent' THEN amount END), 0),"
        " COALESCE(SUM(CASE WHEN state = 'pending' THEN amount END), 0)"
        " FROM proofs WHERE state IN ('unspent', 'pending') GROUP BY mint_url"
    ):
        unspent[url] = int(unspent_sat) * 1000
        pending[url] = int(pending_sat) * 1000
    owed: dict[str, int] = {}
    in_payout: dict[str, int] = {}
    for url, is_payout, msat in c.execute(
        "SELECT COALESCE(a.mint_url, ?), p.id IS NOT NULL,"
        " SUM(a.balance_msat + a.reserved_msat) FROM accounts a"
        " LEFT JOIN payouts p ON p.account_id = a.id"
        " WHERE a.balance_msat > 0 OR a.reserved_msat > 0 GROUP BY 1, 2",
        (primary,),
    ):
        target = in_payout if is_payout else owed
        target[url] = target.get(url, 0) + int(msat)
    earnings = earnings_msat(c)
    urls = list(dict.fromkeys([*mint_urls, *unspent, *pending, *owed, *in_payout]))
    out: list[MintBooks] = []
    for url in urls:
        custody = unspent.get(url, 0) + pending.get(url, 0)
        liabilities, payout = owed.get(url, 0), in_payout.get(url, 0)
        free = unspent.get(url, 0) - liabilities - payout
        withdrawable = max(0, min(free, earnings)) // 1000 * 1000
        out.append(
            MintBooks(
                url,
                custody,
                unspent.get(url, 0),
                liabilities,
                payout,
                custody - liabilities - payout,
                withdrawable,
            )
        )
    return Books(out, earnings)


def earnings_msat(c: sqlite3.Connection) -> int:
    return int(c.execute("SELECT amount_msat FROM earnings WHERE id = 1").fetchone()[0])
