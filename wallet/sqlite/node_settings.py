"""SQL for the node's settings row (one row, id 1)."""

from __future__ import annotations

import sqlite3

from wallet.records import NO_SETTINGS, StoredSettings
from wallet.sqlite.ledger import now


def load(conn: sqlite3.Connection) -> StoredSettings:
    row = conn.execute(
        "SELECT overrides, admin_password_hash, admin_password_origin FROM node_settings"
    ).fetchone()
    if row is None:
        return NO_SETTINGS
    return StoredSettings(row[0], row[1], row[2])


_COLUMNS = ("overrides", "admin_password_hash", "admin_password_origin")


def upsert(conn: sqlite3.Connection, **values: str) -> None:
    assert values and set(values) <= set(_COLUMNS)
    conn.execute(
        "INSERT INTO node_settings (id, updated_at) VALUES (1, ?) ON CONFLICT (id) DO NOTHING",
        (now(),),
    )
    assignments = ", ".join(f"{column} = ?" for column in values)
    conn.execute(
        f"UPDATE node_settings SET {assignments}, updated_at = ? WHERE id = 1",
        (*values.values(), now()),
    )
