"""SQL for the node's settings row (one row, id 1)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Literal

from wallet.sqlite.ledger import now

PasswordOrigin = Literal["generated", "admin"]


@dataclass(frozen=True, slots=True)
class StoredSettings:
    overrides: str  # a JSON object; "{}" when nothing was changed
    admin_password_hash: str | None
    admin_password_origin: PasswordOrigin | None


_NOTHING = StoredSettings("{}", None, None)


def load(conn: sqlite3.Connection) -> StoredSettings:
    row = conn.execute(
        "SELECT overrides, admin_password_hash, admin_password_origin FROM node_settings"
    ).fetchone()
    if row is None:
        return _NOTHING
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
