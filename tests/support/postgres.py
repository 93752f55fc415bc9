"""PostgreSQL for tests: a database of its own per test (created, then dropped), on the
server every development and CI machine runs at 127.0.0.1:5432 (trust auth, postgres)."""

from __future__ import annotations

import asyncio
import os
import re
import threading
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg

SERVER = os.environ.get("ROUTSTR_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
MARKER = ".test-database-url"  # in a test's data_dir: the wallet lives in this database


@asynccontextmanager
async def temporary_database() -> AsyncIterator[str]:
    """The URL of a new, empty database, dropped afterwards."""
    name = f"routstr_test_{os.getpid()}_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(f"{SERVER}/postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield f"{SERVER}/{name}"
    finally:
        admin = await asyncpg.connect(f"{SERVER}/postgres")
        try:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                name,
            )
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        finally:
            await admin.close()


def use_database(data_dir: Path, url: str) -> None:
    """Make the wallet on ``data_dir`` live in PostgreSQL at ``url`` (for every process
    the test starts on that data_dir)."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    (data_dir / MARKER).write_text(url)


def database_url_for(data_dir: Path) -> str:
    """The database URL of the wallet on ``data_dir`` ("" for its SQLite file)."""
    marker = data_dir / MARKER
    return marker.read_text().strip() if marker.exists() else ""


def query_postgres(url: str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Rows of a query (SQLite's ``?`` placeholders) on ``url``, from synchronous code."""
    numbered = iter(range(1, 1000))
    text = re.sub(r"\?", lambda _: f"${next(numbered)}", sql)

    async def run() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(url)
        try:
            return [tuple(r) for r in await conn.fetch(text, *params)]
        finally:
            await conn.close()

    result: list[list[tuple[Any, ...]]] = []
    failure: list[BaseException] = []

    def thread() -> None:
        try:
            result.append(asyncio.run(run()))
        except BaseException as exc:
            failure.append(exc)

    worker = threading.Thread(target=thread)
    worker.start()
    worker.join()
    if failure:
        raise failure[0]
    return result[0]
