"""One SQLite file in WAL mode: one writer connection with group commit, one reader.

A write is a plain function over a ``sqlite3.Connection`` that runs whole in the
writer's thread (one thread hop per transaction, not per statement). Writes queued
while a batch runs are committed together, each in its own SAVEPOINT, so one failing
write rolls back alone and every caller learns its result only after the commit.

On a quiet node (a lone write, the writer idle for a while) the write runs on the event
loop's thread: a reservation's transaction takes tens of microseconds and the two
thread hops around it several times that. On a busy node writes keep going to the
writer's thread, where the ones arriving meanwhile gather into the next batch: committing
each at once on the loop was measured to cost more CPU per request than it saves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from wallet.sqlite.schema import migrate

log = logging.getLogger(__name__)
T = TypeVar("T")
WriteFn = Callable[[sqlite3.Connection], Any]

_MAX_BATCH = 256
_CHECKPOINT_EVERY = 500  # batches between WAL checkpoints, run on the writer's thread
_QUIET_S = 0.0005  # a writer idle this long is on a quiet node: commit a lone write inline


async def _in_thread(conn: aiosqlite.Connection, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(sqlite3_connection, *args)`` in the connection's own thread, in one hop.

    aiosqlite's public API costs one thread hop per statement; a transaction as one
    function costs one. ``_execute`` is the queue every public method uses.
    """
    result: T = await conn._execute(fn, conn._conn, *args)  # type: ignore[no-untyped-call]
    return result


def _configure(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    # checkpoints (the only fsyncs in WAL mode with synchronous=NORMAL) are run by the
    # writer on its own thread, never inside a commit on the event loop's thread
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=10000")


class Database:
    """The wallet's database handle."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._queue: asyncio.Queue[tuple[WriteFn, asyncio.Future[Any]]] = asyncio.Queue()
        self._writer_task: asyncio.Task[None] | None = None
        self._last_commit = 0.0  # monotonic time the writer last finished a batch
        self._commits = 0

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # used from the loop's thread too: only by the writer task, one batch at a time
        self._writer = await aiosqlite.connect(
            self.path, isolation_level=None, check_same_thread=False
        )
        await _in_thread(self._writer, _configure)
        await _in_thread(self._writer, migrate)
        self._reader = await aiosqlite.connect(self.path, isolation_level=None)
        await _in_thread(self._reader, _configure)
        self._writer_task = asyncio.create_task(self._write_loop(), name="wallet-db-writer")

    async def close(self) -> None:
        if self._writer_task is not None:
            self._writer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer_task
            self._writer_task = None
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = None

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in a write transaction; returns after it is committed."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((fn, future))
        return await future

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one read transaction (a consistent snapshot)."""
        reader = self._reader
        if reader is None:
            raise RuntimeError("database is closed")
        return await _in_thread(reader, _read_snapshot, fn)

    async def _write_loop(self) -> None:
        writer = self._writer
        assert writer is not None
        while True:
            batch = [await self._queue.get()]
            while len(batch) < _MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            live = [(fn, fut) for fn, fut in batch if not fut.cancelled()]
            fns = [fn for fn, _ in live]
            try:
                if len(fns) == 1 and time.monotonic() - self._last_commit > _QUIET_S:
                    outcomes = _run_batch(writer._conn, fns)
                else:
                    outcomes = await _in_thread(writer, _run_batch, fns)
            except Exception as exc:  # the commit itself failed: nothing in the batch happened
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            finally:
                self._last_commit = time.monotonic()
            for (_, fut), (ok, value) in zip(live, outcomes, strict=True):
                if fut.done():
                    continue
                if ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(value)
            self._commits += 1
            if self._commits % _CHECKPOINT_EVERY == 0:
                try:
                    await _in_thread(writer, _checkpoint)
                except sqlite3.Error as exc:  # the WAL only grows until the next one
                    log.warning("WAL checkpoint failed: %s", exc)


def _checkpoint(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")


def _read_snapshot(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    conn.execute("BEGIN")
    try:
        return fn(conn)
    finally:
        conn.execute("COMMIT")


def _run_batch(conn: sqlite3.Connection, fns: list[WriteFn]) -> list[tuple[bool, Any]]:
    if len(fns) == 1:
        return [_run_alone(conn, fns[0])]
    outcomes: list[tuple[bool, Any]] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for fn in fns:
            conn.execute("SAVEPOINT w")
            try:
                value = fn(conn)
            except BaseException as exc:
                conn.execute("ROLLBACK TO w")
                conn.execute("RELEASE w")
                outcomes.append((False, exc))
            else:
                conn.execute("RELEASE w")
                outcomes.append((True, value))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return outcomes


def _run_alone(conn: sqlite3.Connection, fn: WriteFn) -> tuple[bool, Any]:
    """A batch of one needs no savepoint: its failure rolls the transaction back."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        value = fn(conn)
    except BaseException as exc:
        conn.execute("ROLLBACK")
        return False, exc
    try:
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return True, value
