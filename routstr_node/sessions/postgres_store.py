"""Chat sessions in PostgreSQL (``[database] url``): shared by every node process.

An append locks its session's row, so two turns of one session sent to two processes
at once are kept one after the other, never interleaved or numbered twice.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import asyncpg

from routstr_node.sessions.store import Message, SessionSummary, StoredSession, title_of

_POOL_SIZE = 4
_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    account_id BIGINT NOT NULL,
    id TEXT NOT NULL,
    created BIGINT NOT NULL,
    updated BIGINT NOT NULL,
    title TEXT NOT NULL,
    PRIMARY KEY (account_id, id)
);
CREATE INDEX IF NOT EXISTS sessions_by_updated ON sessions (updated);
CREATE TABLE IF NOT EXISTS session_messages (
    account_id BIGINT NOT NULL,
    session_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (account_id, session_id, seq)
);
"""


async def _remove(conn: Any, account_id: int, session_id: str) -> bool:
    await conn.execute(
        "DELETE FROM session_messages WHERE account_id = $1 AND session_id = $2",
        account_id,
        session_id,
    )
    status = await conn.execute(
        "DELETE FROM sessions WHERE account_id = $1 AND id = $2", account_id, session_id
    )
    return bool(status == "DELETE 1")


class PostgresSessionStore:
    """:class:`~routstr_node.sessions.store.SessionStore` in PostgreSQL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._pool: Any = None

    @property
    def pool(self) -> Any:
        if self._pool is None:
            raise RuntimeError("the session store is not open")
        return self._pool

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(self.url, min_size=1, max_size=_POOL_SIZE)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(727419002)")
            await conn.execute(_SCHEMA)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def messages(self, account_id: int, session_id: str, alive_since: int) -> list[Message]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT m.message FROM session_messages m JOIN sessions s"
                " ON s.account_id = m.account_id AND s.id = m.session_id"
                " WHERE m.account_id = $1 AND m.session_id = $2 AND s.updated >= $3"
                " ORDER BY m.seq",
                account_id,
                session_id,
                alive_since,
            )
        return [json.loads(r[0]) for r in rows]

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
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO sessions (account_id, id, created, updated, title)"
                " VALUES ($1, $2, $3, $3, $4) ON CONFLICT DO NOTHING",
                account_id,
                session_id,
                now,
                title_of(added),
            )
            updated = await conn.fetchval(
                "SELECT updated FROM sessions WHERE account_id = $1 AND id = $2 FOR UPDATE",
                account_id,
                session_id,
            )
            if updated < alive_since:  # expired: it starts again
                await _remove(conn, account_id, session_id)
                await conn.execute(
                    "INSERT INTO sessions (account_id, id, created, updated, title)"
                    " VALUES ($1, $2, $3, $3, $4)",
                    account_id,
                    session_id,
                    now,
                    title_of(added),
                )
            await conn.execute(
                "UPDATE sessions SET updated = $3 WHERE account_id = $1 AND id = $2",
                account_id,
                session_id,
                now,
            )
            last = await conn.fetchval(
                "SELECT COALESCE(MAX(seq), 0) FROM session_messages"
                " WHERE account_id = $1 AND session_id = $2",
                account_id,
                session_id,
            )
            await conn.executemany(
                "INSERT INTO session_messages (account_id, session_id, seq, message)"
                " VALUES ($1, $2, $3, $4)",
                [(account_id, session_id, last + 1 + i, m) for i, m in enumerate(encoded)],
            )
            rows = await conn.fetch(
                "SELECT seq, message FROM session_messages WHERE account_id = $1"
                " AND session_id = $2 ORDER BY seq DESC LIMIT $3",
                account_id,
                session_id,
                max_messages,
            )
            kept = list(reversed(rows))
            while kept and json.loads(kept[0]["message"]).get("role") != "user":
                kept = kept[1:]
            oldest = kept[0]["seq"] if kept else last + 1 + len(encoded)
            await conn.execute(
                "DELETE FROM session_messages WHERE account_id = $1 AND session_id = $2"
                " AND seq < $3",
                account_id,
                session_id,
                oldest,
            )

    async def sessions(self, account_id: int, alive_since: int) -> list[SessionSummary]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT s.id, s.created, s.updated, COUNT(m.seq) AS n, s.title FROM sessions s"
                " LEFT JOIN session_messages m ON m.account_id = s.account_id"
                " AND m.session_id = s.id WHERE s.account_id = $1 AND s.updated >= $2"
                " GROUP BY s.account_id, s.id ORDER BY s.updated DESC, s.id",
                account_id,
                alive_since,
            )
        return [
            SessionSummary(r["id"], int(r["created"]), int(r["updated"]), int(r["n"]), r["title"])
            for r in rows
        ]

    async def summary(
        self, account_id: int, session_id: str, alive_since: int
    ) -> SessionSummary | None:
        for found in await self.sessions(account_id, alive_since):
            if found.id == session_id:
                return found
        return None

    async def delete(self, account_id: int, session_id: str) -> bool:
        async with self.pool.acquire() as conn, conn.transaction():
            return await _remove(conn, account_id, session_id)

    async def remove_expired(self, alive_since: int) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "DELETE FROM session_messages m USING sessions s WHERE s.account_id ="
                " m.account_id AND s.id = m.session_id AND s.updated < $1",
                alive_since,
            )
            status = await conn.execute("DELETE FROM sessions WHERE updated < $1", alive_since)
        return int(status.split()[-1])

    async def export(self) -> list[StoredSession]:
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            texts: dict[tuple[int, str], list[str]] = {}
            for row in await conn.fetch(
                "SELECT account_id, session_id, message FROM session_messages"
                " ORDER BY account_id, session_id, seq"
            ):
                texts.setdefault((row[0], row[1]), []).append(row[2])
            rows = await conn.fetch("SELECT account_id, id, created, updated, title FROM sessions")
        return [
            StoredSession(int(a), i, int(c), int(u), t, tuple(texts.get((a, i), ())))
            for a, i, c, u, t in rows
        ]

    async def restore(self, sessions: Sequence[StoredSession]) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.executemany(
                "INSERT INTO sessions (account_id, id, created, updated, title)"
                " VALUES ($1, $2, $3, $4, $5)",
                [(s.account_id, s.id, s.created, s.updated, s.title) for s in sessions],
            )
            await conn.executemany(
                "INSERT INTO session_messages (account_id, session_id, seq, message)"
                " VALUES ($1, $2, $3, $4)",
                [(s.account_id, s.id, n, m) for s in sessions for n, m in enumerate(s.messages)],
            )
