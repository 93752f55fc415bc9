"""Which session store a node uses: its own SQLite file, or the shared PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from routstr_node.sessions.postgres_store import PostgresSessionStore
from routstr_node.sessions.store import SESSIONS_FILE, SessionStore, SqliteSessionStore


def session_store_for(data_dir: Path, database_url: str) -> SessionStore:
    """PostgreSQL when ``[database] url`` names it (shared by the node's processes),
    else a SQLite file in data_dir."""
    if database_url:
        return PostgresSessionStore(database_url)
    return SqliteSessionStore(data_dir / SESSIONS_FILE)
