"""Which store a node's ``[database] url`` names: SQLite in data_dir, or PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from wallet.sqlite.store import SqliteStore
from wallet.store import WalletStore


def store_for(data_dir: Path, database_url: str = "") -> WalletStore:
    """The store for ``database_url`` (empty: the SQLite file in ``data_dir``)."""
    if not database_url:
        return SqliteStore(data_dir)
    raise ValueError(f"unsupported database url {database_url!r}")
