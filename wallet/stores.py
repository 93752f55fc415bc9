"""Which store a node's ``[database] url`` names: SQLite in data_dir, or PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from wallet.postgres.store import PostgresStore
from wallet.sqlite.store import SqliteStore
from wallet.store import WalletStore
from wallet.store_errors import StoreUnavailable, redacted

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def store_for(data_dir: Path, database_url: str = "") -> WalletStore:
    """The store for ``database_url`` (empty: the SQLite file in ``data_dir``)."""
    if not database_url:
        return SqliteStore(data_dir)
    if database_url.startswith(POSTGRES_SCHEMES):
        return PostgresStore(database_url)
    raise StoreUnavailable(
        f"unsupported database url {redacted(database_url)}: use postgresql://… (or leave it"
        " empty for SQLite in data_dir)"
    )
