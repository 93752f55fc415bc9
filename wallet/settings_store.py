"""The node's own settings document and admin password hash, in the wallet's database.

The wallet does not read the document: it is the node's business. It lives here so
that one backup of data_dir (or the one PostgreSQL database) holds the money and the
settings the node runs with.
"""

from __future__ import annotations

from wallet.records import PasswordOrigin, StoredSettings
from wallet.store import WalletStore

__all__ = ["PasswordOrigin", "SettingsStore", "StoredSettings"]


class SettingsStore:
    def __init__(self, store: WalletStore) -> None:
        self._store = store

    async def load(self) -> StoredSettings:
        return await self._store.load_settings()

    async def save_password_hash(self, password_hash: str, origin: PasswordOrigin) -> None:
        await self._store.save_settings(None, password_hash, origin)

    async def save(self, overrides: str, password_hash: str | None) -> None:
        """The overrides, and a password set by the admin, in one transaction."""
        await self._store.save_settings(overrides, password_hash, "admin")
