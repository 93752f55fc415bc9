"""Invoices (Lightning in): the mint quotes the node asked for and what became of them.

Each function runs inside a transaction of :mod:`wallet.sqlite.database`; the ones that
change an invoice's state do it conditionally, so a second caller changes nothing.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from wallet.records import InvoiceRecord
from wallet.sqlite.ledger import now

_COLUMNS = (
    "id, mint_url, bolt11, amount_sat, state, account_id, credited_account_id, credited_msat,"
    " keys_delivered_at IS NOT NULL, expires_at, created_at, paid_at"
)


def _record(row: Any) -> InvoiceRecord:
    return InvoiceRecord(
        row[0],
        row[1],
        row[2],
        int(row[3]),
        row[4],
        row[5],
        row[6],
        row[7],
        bool(row[8]),
        row[9],
        int(row[10]),
        row[11],
    )


def insert_invoice(
    conn: sqlite3.Connection,
    invoice_id: str,
    *,
    secret_hash: str,
    mint_url: str,
    quote_id: str,
    bolt11: str,
    amount_sat: int,
    account_id: int | None,
    expires_at: int | None,
) -> None:
    conn.execute(
        "INSERT INTO invoices (id, secret_hash, mint_url, quote_id, bolt11, amount_sat,"
        " state, account_id, expires_at, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, 'unpaid', ?, ?, ?)",
        (invoice_id, secret_hash, mint_url, quote_id, bolt11, amount_sat, account_id,
         expires_at, now()),
    )  # fmt: skip


def invoice(conn: sqlite3.Connection, invoice_id: str) -> InvoiceRecord | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM invoices WHERE id = ?", (invoice_id,)).fetchone()
    return _record(row) if row else None


def open_invoice_ids(conn: sqlite3.Connection) -> list[str]:
    """Invoices that may still be paid or are being minted, oldest first."""
    rows = conn.execute(
        "SELECT id FROM invoices WHERE state IN ('unpaid', 'minting') ORDER BY created_at"
    ).fetchall()
    return [str(r[0]) for r in rows]


def quote_id(conn: sqlite3.Connection, invoice_id: str) -> str:
    row = conn.execute("SELECT quote_id FROM invoices WHERE id = ?", (invoice_id,)).fetchone()
    return str(row[0])


def operation_id(conn: sqlite3.Connection, invoice_id: str) -> int | None:
    """The invoice's mint operation while one is under way."""
    row = conn.execute("SELECT operation_id FROM invoices WHERE id = ?", (invoice_id,)).fetchone()
    return int(row[0]) if row is not None and row[0] is not None else None


def secret_hash(conn: sqlite3.Connection, invoice_id: str) -> str | None:
    row = conn.execute("SELECT secret_hash FROM invoices WHERE id = ?", (invoice_id,)).fetchone()
    return str(row[0]) if row is not None else None


def set_state(conn: sqlite3.Connection, invoice_id: str, state: str, when: tuple[str, ...]) -> bool:
    """Move the invoice to ``state`` if it is in one of ``when``; whether it moved."""
    marks = ",".join("?" * len(when))
    cur = conn.execute(
        f"UPDATE invoices SET state = ? WHERE id = ? AND state IN ({marks})",
        (state, invoice_id, *when),
    )
    return cur.rowcount == 1


def set_operation(conn: sqlite3.Connection, invoice_id: str, op_id: int) -> None:
    conn.execute("UPDATE invoices SET operation_id = ? WHERE id = ?", (op_id, invoice_id))


def mark_paid(
    conn: sqlite3.Connection, invoice_id: str, account_id: int, credited_msat: int
) -> None:
    conn.execute(
        "UPDATE invoices SET state = 'paid', credited_account_id = ?, credited_msat = ?,"
        " paid_at = ? WHERE id = ?",
        (account_id, credited_msat, now(), invoice_id),
    )


def release_minting(conn: sqlite3.Connection, invoice_id: str, state: str) -> None:
    """A mint operation that failed: the invoice leaves 'minting' for ``state``."""
    conn.execute(
        "UPDATE invoices SET state = ?, operation_id = NULL WHERE id = ? AND state = 'minting'",
        (state, invoice_id),
    )


def mark_keys_delivered(conn: sqlite3.Connection, invoice_id: str) -> None:
    conn.execute("UPDATE invoices SET keys_delivered_at = ? WHERE id = ?", (now(), invoice_id))
