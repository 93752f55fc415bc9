"""Where chat sessions are kept: one Protocol, a SQLite file of its own by default.

A session is an account's: every question names the account, so another account's
session of the same id is simply not there. Messages are kept as the client sent
them (and as the upstream answered), as JSON text, in order.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from routstr_node.sqlite_file import SqliteFile

T = TypeVar("T")
SESSIONS_FILE = "sessions.sqlite3"
Message = dict[str, Any]


@dataclass(frozen=True, slots=True)
class SessionSummary:
    id: str
    created: int
    updated: int
    messages: int
    title: str


@dataclass(frozen=True, slots=True)
class StoredSession:
    """A whole session as a store holds it (messages as their stored JSON text): what
    ``migrate`` moves from one store to another."""

    account_id: int
    id: str
    created: int
    updated: int
    title: str
    messages: tuple[str, ...]


class SessionStore(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def messages(self, account_id: int, session_id: str, alive_since: int) -> list[Message]:
        """The session's messages, oldest first (none: unknown, or not updated since
        ``alive_since``: expired)."""

    async def append(
        self,
        account_id: int,
        session_id: str,
        added: Sequence[Message],
        now: int,
        max_messages: int,
        alive_since: int,
    ) -> None:
        """Add ``added`` at the end (an expired session starts again), keeping the
        newest ``max_messages``."""

    async def sessions(self, account_id: int, alive_since: int) -> list[SessionSummary]:
        """The account's sessions, the latest updated first."""

    async def summary(
        self, account_id: int, session_id: str, alive_since: int
    ) -> SessionSummary | None: ...

    async def delete(self, account_id: int, session_id: str) -> bool: ...

    async def remove_expired(self, alive_since: int) -> int: ...

    async def export(self) -> list[StoredSession]:
        """Every session, expired ones too, with its messages in order."""

    async def restore(self, sessions: Sequence[StoredSession]) -> None:
        """Write ``sessions`` as they are (into a store that has none of them)."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    account_id INTEGER NOT NULL,
    id TEXT NOT NULL,
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    title TEXT NOT NULL,
    PRIMARY KEY (account_id, id)
);
CREATE INDEX IF NOT EXISTS sessions_by_updated ON sessions (updated);
CREATE TABLE IF NOT EXISTS session_messages (
    account_id INTEGER NOT NULL,
    session_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (account_id, session_id, seq)
);
"""
_TITLE_CHARS = 60


def title_of(messages: Sequence[Message]) -> str:
    """The first user message's text, shortened: what a session list shows."""
    for message in messages:
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            text = " ".join(str(content or "").split())
            return text[:_TITLE_CHARS]
    return ""


def _remove(conn: sqlite3.Connection, account_id: int, session_id: str) -> bool:
    conn.execute(
        "DELETE FROM session_messages WHERE account_id = ? AND session_id = ?",
        (account_id, session_id),
    )
    return (
        conn.execute(
            "DELETE FROM sessions WHERE account_id = ? AND id = ?", (account_id, session_id)
        ).rowcount
        == 1
    )


class SqliteSessionStore:
    """:class:`SessionStore` in a SQLite file, on one thread of its own."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = SqliteFile(path, _SCHEMA, "sessions")

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._file.run(fn)

    async def open(self) -> None:
        await self._file.open()

    async def close(self) -> None:
        await self._file.close()

    async def messages(self, account_id: int, session_id: str, alive_since: int) -> list[Message]:
        def read(conn: sqlite3.Connection) -> list[Message]:
            rows = conn.execute(
                "SELECT m.message FROM session_messages m JOIN sessions s"
                " ON s.account_id = m.account_id AND s.id = m.session_id"
                " WHERE m.account_id = ? AND m.session_id = ? AND s.updated >= ?"
                " ORDER BY m.seq",
                (account_id, session_id, alive_since),
            )
            return [json.loads(r[0]) for r in rows]

        return await self._run(read)

    async def append(
        self,
        account_id: int,
        session_id: str,
        added: Sequence[Message],
        now: int,
        max_messages: int,
        alive_since: int,
    ) -> None:
        encoded = [json.dumps(m, separators=(",", ":")) for m in added]
        title = title_of(added)

        def write(conn: sqlite3.Connection) -> None:
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                found = conn.execute(
                    "SELECT updated FROM sessions WHERE account_id = ? AND id = ?",
                    (account_id, session_id),
                ).fetchone()
                if found is not None and found[0] < alive_since:
                    _remove(conn, account_id, session_id)  # expired: it starts again
                    found = None
                if found is None:
                    conn.execute(
                        "INSERT INTO sessions (account_id, id, created, updated, title)"
                        " VALUES (?, ?, ?, ?, ?)",
                        (account_id, session_id, now, now, title),
                    )
                else:
                    conn.execute(
                        "UPDATE sessions SET updated = ? WHERE account_id = ? AND id = ?",
                        (now, account_id, session_id),
                    )
                last = conn.execute(
                    "SELECT COALESCE(MAX(seq), 0) FROM session_messages"
                    " WHERE account_id = ? AND session_id = ?",
                    (account_id, session_id),
                ).fetchone()[0]
                conn.executemany(
                    "INSERT INTO session_messages (account_id, session_id, seq, message)"
                    " VALUES (?, ?, ?, ?)",
                    [(account_id, session_id, last + 1 + i, m) for i, m in enumerate(encoded)],
                )
                _trim(conn, account_id, session_id, max_messages)

        await self._run(write)

    async def sessions(self, account_id: int, alive_since: int) -> list[SessionSummary]:
        def read(conn: sqlite3.Connection) -> list[SessionSummary]:
            rows = conn.execute(
                "SELECT s.id, s.created, s.updated, COUNT(m.seq), s.title FROM sessions s"
                " LEFT JOIN session_messages m ON m.account_id = s.account_id"
                " AND m.session_id = s.id WHERE s.account_id = ? AND s.updated >= ?"
                " GROUP BY s.id ORDER BY s.updated DESC, s.id",
                (account_id, alive_since),
            )
            return [SessionSummary(str(r[0]), int(r[1]), int(r[2]), int(r[3]), r[4]) for r in rows]

        return await self._run(read)

    async def summary(
        self, account_id: int, session_id: str, alive_since: int
    ) -> SessionSummary | None:
        for found in await self.sessions(account_id, alive_since):
            if found.id == session_id:
                return found
        return None

    async def delete(self, account_id: int, session_id: str) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                return _remove(conn, account_id, session_id)

        return await self._run(write)

    async def remove_expired(self, alive_since: int) -> int:
        def write(conn: sqlite3.Connection) -> int:
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(
                    "DELETE FROM session_messages WHERE (account_id, session_id) IN"
                    " (SELECT account_id, id FROM sessions WHERE updated < ?)",
                    (alive_since,),
                )
                return conn.execute(
                    "DELETE FROM sessions WHERE updated < ?", (alive_since,)
                ).rowcount

        return await self._run(write)

    async def export(self) -> list[StoredSession]:
        def read(conn: sqlite3.Connection) -> list[StoredSession]:
            texts: dict[tuple[int, str], list[str]] = {}
            for account_id, session_id, message in conn.execute(
                "SELECT account_id, session_id, message FROM session_messages"
                " ORDER BY account_id, session_id, seq"
            ):
                texts.setdefault((account_id, session_id), []).append(message)
            return [
                StoredSession(a, i, c, u, t, tuple(texts.get((a, i), ())))
                for a, i, c, u, t in conn.execute(
                    "SELECT account_id, id, created, updated, title FROM sessions"
                )
            ]

        return await self._run(read)

    async def restore(self, sessions: Sequence[StoredSession]) -> None:
        def write(conn: sqlite3.Connection) -> None:
            with conn:
                conn.execute("BEGIN")
                for one in sessions:
                    conn.execute(
                        "INSERT INTO sessions (account_id, id, created, updated, title)"
                        " VALUES (?, ?, ?, ?, ?)",
                        (one.account_id, one.id, one.created, one.updated, one.title),
                    )
                    conn.executemany(
                        "INSERT INTO session_messages (account_id, session_id, seq, message)"
                        " VALUES (?, ?, ?, ?)",
                        [(one.account_id, one.id, n, m) for n, m in enumerate(one.messages)],
                    )

        await self._run(write)


def _trim(conn: sqlite3.Connection, account_id: int, session_id: str, max_messages: int) -> None:
    """Keep the newest ``max_messages``, starting at a user turn (an answer without its
    question would open the conversation otherwise)."""
    rows = conn.execute(
        "SELECT seq, message FROM session_messages WHERE account_id = ? AND session_id = ?"
        " ORDER BY seq DESC LIMIT ?",
        (account_id, session_id, max_messages),
    ).fetchall()
    kept = rows[::-1]
    while kept and json.loads(kept[0][1]).get("role") != "user":
        kept = kept[1:]
    oldest_kept = kept[0][0] if kept else None
    if oldest_kept is None:
        conn.execute(
            "DELETE FROM session_messages WHERE account_id = ? AND session_id = ?",
            (account_id, session_id),
        )
    else:
        conn.execute(
            "DELETE FROM session_messages WHERE account_id = ? AND session_id = ? AND seq < ?",
            (account_id, session_id, oldest_kept),
        )
