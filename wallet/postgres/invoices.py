"""Invoice statements for PostgreSQL (Lightning in): each state change is conditional, so
a second caller, in this process or another, changes nothing."""

from __future__ import annotations

from typing import Any

from wallet.postgres.ledger import Conn, _count, now
from wallet.records import InvoiceRecord, NewInvoiceRow

_COLUMNS = (
    "id, mint_url, bolt11, amount_sat, state, account_id, credited_account_id, credited_msat,"
    " keys_delivered_at IS NOT NULL, expires_at, created_at, paid_at"
)


def _record(row: Any) -> InvoiceRecord:
    def opt(value: Any) -> int | None:
        return None if value is None else int(value)

    return InvoiceRecord(
        row[0], row[1], row[2], int(row[3]), row[4], opt(row[5]), opt(row[6]), opt(row[7]),
        bool(row[8]), opt(row[9]), int(row[10]), opt(row[11]),
    )  # fmt: skip


async def insert_invoice(conn: Conn, invoice: NewInvoiceRow) -> None:
    await conn.execute(
        "INSERT INTO invoices (id, secret_hash, mint_url, quote_id, bolt11, amount_sat,"
        " state, account_id, expires_at, created_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, 'unpaid', $7, $8, $9)",
        invoice.id, invoice.secret_hash, invoice.mint_url, invoice.quote_id, invoice.bolt11,
        invoice.amount_sat, invoice.account_id, invoice.expires_at, now(),
    )  # fmt: skip


async def invoice(conn: Conn, invoice_id: str) -> InvoiceRecord | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM invoices WHERE id = $1", invoice_id)
    return _record(row) if row else None


async def open_invoice_ids(conn: Conn) -> list[str]:
    rows = await conn.fetch(
        "SELECT id FROM invoices WHERE state IN ('unpaid', 'minting') ORDER BY created_at"
    )
    return [str(r[0]) for r in rows]


async def quote_id(conn: Conn, invoice_id: str) -> str:
    return str(await conn.fetchval("SELECT quote_id FROM invoices WHERE id = $1", invoice_id))


async def operation_id(conn: Conn, invoice_id: str) -> int | None:
    value = await conn.fetchval("SELECT operation_id FROM invoices WHERE id = $1", invoice_id)
    return int(value) if value is not None else None


async def secret_hash(conn: Conn, invoice_id: str) -> str | None:
    value = await conn.fetchval("SELECT secret_hash FROM invoices WHERE id = $1", invoice_id)
    return str(value) if value is not None else None


async def set_state(conn: Conn, invoice_id: str, state: str, when: tuple[str, ...]) -> bool:
    status = await conn.execute(
        "UPDATE invoices SET state = $1 WHERE id = $2 AND state = ANY($3::text[])",
        state, invoice_id, list(when),
    )  # fmt: skip
    return _count(status) == 1


async def set_operation(conn: Conn, invoice_id: str, op_id: int) -> None:
    await conn.execute("UPDATE invoices SET operation_id = $1 WHERE id = $2", op_id, invoice_id)


async def mark_paid(conn: Conn, invoice_id: str, account_id: int, credited_msat: int) -> None:
    await conn.execute(
        "UPDATE invoices SET state = 'paid', credited_account_id = $1, credited_msat = $2,"
        " paid_at = $3 WHERE id = $4",
        account_id, credited_msat, now(), invoice_id,
    )  # fmt: skip


async def release_minting(conn: Conn, invoice_id: str, state: str) -> None:
    await conn.execute(
        "UPDATE invoices SET state = $1, operation_id = NULL WHERE id = $2 AND state = 'minting'",
        state, invoice_id,
    )  # fmt: skip


async def mark_keys_delivered(conn: Conn, invoice_id: str) -> None:
    await conn.execute(
        "UPDATE invoices SET keys_delivered_at = $1 WHERE id = $2", now(), invoice_id
    )
