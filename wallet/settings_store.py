"""The node's own settings document and admin password hash, in the wallet's database.

The wallet does not read the document: it is the node's business. It lives here so
that one backup of data_dir holds the money and the settings the node runs with.
"""

from __future__ import annotations

import sqlite3

from wallet.sqlite import node_settings
from wallet.sqlite.database import Database
from wallet.sqlite.node_settings import PasswordOrigin, StoredSettings

__all__ = ["PasswordOrigin", "SettingsStore", "StoredSettings"]


class SettingsStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def load(self) -> StoredSettings:
        return await self._db.read(node_settings.load)

    async def save_password_hash(self, password_hash: str, origin: PasswordOrigin) -> None:
        await self._db.write(
            lambda conn: node_settings.upsert(
                conn, admin_password_hash=password_hash, admin_password_origin=origin
            )
        )

    async def save(self, overrides: str, password_hash: str | None) -> None:
        """The overrides, and a password set by the admin, in one transaction."""

        def write(conn: sqlite3.Connection) -> None:
            node_settings.upsert(conn, overrides=overrides)
            if password_hash is not None:
                node_settings.upsert(
                    conn, admin_password_hash=password_hash, admin_password_origin="admin"
                )

        await self._db.write(write)
